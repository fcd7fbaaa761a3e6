"""One composition for the whole reliability suite (each start costs most of a minute on two cores), backed
by the Supabase Storage stand-in and stopped when the suite ends; the figures are printed after the test
summary, and the whole server log is searched for secrets at the end."""

from __future__ import annotations

import contextlib
import time

import pytest

from testbed.composition import (
    API_KEY,
    DRAIN_WAIT_S,
    SERVICES,
    SUPABASE_KEY,
    Composition,
    FaultyStorage,
    MemoryWatch,
)
from testbed.figures import FIGURES

SECRETS = {"the Supabase service role key": SUPABASE_KEY, "the API key": API_KEY}


@pytest.fixture(scope="package")
def storage():
    with FaultyStorage(service_key=SUPABASE_KEY) as fake:
        yield fake


@pytest.fixture(scope="package")
def composition(tiny_store, storage, tmp_path_factory):
    started = time.monotonic()
    served = Composition(tiny_store, tmp_path_factory.mktemp("reliability"), storage).start()
    FIGURES.timing("composition start", time.monotonic() - started)
    watch = MemoryWatch(served).start()
    yield served
    watch.stop()
    FIGURES.memory(watch.peak)
    storage.clear_faults()
    storage.set_down(False)
    with contextlib.suppress(AssertionError):  # what is still missing then counts as lost
        served.wait_until_stored(sorted(FIGURES.spooled_keys), timeout_s=DRAIN_WAIT_S)
    lost = FIGURES.settle(served.stored)
    served.stop()
    log = served.log_path.read_text(errors="replace")
    leaked = [name for name, secret in SECRETS.items() if secret in log]
    assert not leaked, f"the server log contains {', '.join(leaked)}"
    assert not lost, f"outputs generated during an outage never reached storage: {sorted(lost)}"


@pytest.fixture
def gateway(composition, storage):
    """The composition, put back in working order after a test that faulted it: storage up, every service
    process running, and every capability answering."""
    yield composition
    storage.clear_faults()
    storage.set_down(False)
    for service in SERVICES:
        for process in composition.processes(service):
            process.resume()
    composition.wait_until_serving(timeout_s=240)


def pytest_terminal_summary(terminalreporter):
    if FIGURES.requests:
        terminalreporter.write_sep("=", "reliability figures")
        terminalreporter.write_line(FIGURES.render())

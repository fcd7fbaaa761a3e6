"""What a running job says while it waits on a model service (`Progress.watch`), on a real SQLite job store.

The model service is a scripted readiness answer and a call made here: what is checked is when the runner
probes and reports, against when the call starts.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from genmedia.jobs.runner import JobLost, Progress
from genmedia.jobs.schema import create_engine_for, migrate
from genmedia.jobs.store import JobStore

RUNNER = "generate_image-test"
SERVICE = "the image service"


class ModelService:
    """Answers `is_ready` from a script of answers, noting the job's stage at each probe."""

    def __init__(self, store: JobStore, *readiness: bool):
        self.store = store
        self.readiness = list(readiness)
        self.job_id: str | None = None
        self.stages_at_probes: list[str] = []
        self.ready = asyncio.Event()

    async def is_ready(self, timeout: float) -> bool:
        self.stages_at_probes.append(await stage(self.store, self.job_id))
        answer = self.readiness.pop(0)
        if answer:
            self.ready.set()
        return answer


@pytest.fixture
def store(tmp_path):
    engine = create_engine_for(f"sqlite:///{tmp_path}/jobs.db")
    migrate(engine)
    yield JobStore(engine, retention_s=3600)
    engine.dispose()


async def running_job(store: JobStore) -> tuple[Progress, str]:
    body = {"prompt": "a lighthouse", "seed": 1}
    job, _ = await store.submit(
        kind="generate_image",
        owner="me",
        request=body,
        submitted=body,
        idempotency_key=None,
        webhook=None,
        webhook_events=("completed",),
    )
    assert (await store.claim("generate_image", RUNNER))["id"] == job["id"]
    return Progress(store, job["id"], RUNNER), job["id"]


async def stage(store: JobStore, job_id: str) -> str:
    return (await store.get(job_id, "me"))["stage"]


def test_a_ready_service_is_probed_and_reported_before_the_call_and_not_while_it_works(store):
    async def scenario():
        service = ModelService(store, True)
        progress, service.job_id = await running_job(store)
        seen = {}

        async def call():
            seen["stage"], seen["probes"] = await stage(store, service.job_id), len(service.stages_at_probes)
            return "image"

        answer = await progress.watch(service, SERVICE, call())
        return answer, seen, service.stages_at_probes

    answer, at_the_call_s_start, stages_at_probes = asyncio.run(scenario())

    assert answer == "image"
    assert at_the_call_s_start == {"stage": f"{SERVICE} is working", "probes": 1}
    assert stages_at_probes == ["starting"]


def test_a_service_still_starting_is_called_at_once_and_the_job_says_it_waits(store):
    async def scenario():
        service = ModelService(store, False, True)
        progress, service.job_id = await running_job(store)
        seen = {}

        async def call():
            seen["probes"] = len(service.stages_at_probes)
            await service.ready.wait()  # the answer comes once the service is up
            return "image"

        answer = await progress.watch(service, SERVICE, call())
        return answer, seen, service.stages_at_probes, await stage(store, service.job_id)

    answer, at_the_call_s_start, stages_at_probes, final_stage = asyncio.run(scenario())

    assert answer == "image"
    # Called after the first probe, before the second: the call is what wakes a service scaled to zero.
    assert at_the_call_s_start == {"probes": 1}
    assert stages_at_probes == ["starting", f"waiting for {SERVICE} to start"]
    assert final_stage == f"{SERVICE} is working"


def test_a_job_canceled_before_the_call_never_starts_it(store):
    async def scenario():
        service = ModelService(store, True)
        progress, service.job_id = await running_job(store)
        await store.cancel(service.job_id, "me")
        call = asyncio.sleep(0, result="image")
        with pytest.raises(JobLost):
            await progress.watch(service, SERVICE, call)
        return inspect.getcoroutinestate(call)

    assert asyncio.run(scenario()) == inspect.CORO_CLOSED

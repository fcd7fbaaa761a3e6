"""Storage faults, through the gateway, end to end.

Transient failures are retried through; an outage answers 503 + Retry-After within a bounded time; every
image and clip generated during it waits in the spool and reaches storage once storage is back (on the next
identical request, by the background drain, and after a crash of the service that holds it), and is never
generated twice (`genmedia_outputs_generated_total` counts each generation).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from testbed.composition import (
    BACKEND_TIMEOUT_S,
    DRAIN_WAIT_S,
    STORAGE_RETRY_BUDGET_S,
    STORAGE_TIMEOUT_S,
    new_seed,
)
from testbed.figures import FIGURES

# An outage request makes three storage operations in sequence (the gateway's cache lookup, the service's,
# the upload), each within one retry budget plus one request timeout, around one tiny generation.
OUTAGE_ANSWER_BOUND_S = 3 * (STORAGE_RETRY_BUDGET_S + STORAGE_TIMEOUT_S) + 10


def wait_until_nothing_spooled(gateway) -> None:
    deadline = time.monotonic() + DRAIN_WAIT_S
    while gateway.spooled("images") or gateway.spooled("audio"):
        assert time.monotonic() < deadline, "the spool did not drain"
        time.sleep(0.2)


def newly_spooled(gateway, capability: str, before: list[str]) -> str:
    [key] = [key for key in gateway.spooled(capability) if key not in before]
    return key


@pytest.mark.parametrize(
    ("fault", "status"),
    [("fail", 500), ("fail", 503), ("fail", 429), ("hang", None)],
    ids=["500", "503", "429", "timeout"],
)
def test_transient_upload_failures_are_retried_through_end_to_end(gateway, storage, fault, status):
    # A spool drain would meet the faults first: wait until nothing is spooled.
    wait_until_nothing_spooled(gateway)
    if fault == "fail":
        storage.fail_next_uploads(2, status)
        faults = 2
    else:
        storage.hang_next_uploads(1, 3 * STORAGE_TIMEOUT_S)
        faults = 1
    FIGURES.inject(faults)
    generated = gateway.generated("images")

    response = FIGURES.record(gateway.image(), fault=True)

    assert response.status_code == 200, response.text
    key = response.json()["file_key"]
    assert response.json()["cached"] is False
    assert gateway.stored(key)
    assert storage.upload_attempts[key] == faults + 1
    assert gateway.generated("images") == generated + 1


def test_transient_upload_failures_of_speech_are_retried_through(gateway, storage):
    wait_until_nothing_spooled(gateway)
    storage.fail_next_uploads(2, 500)
    FIGURES.inject(2)
    response = FIGURES.record(gateway.speech(), fault=True)
    assert response.status_code == 200, response.text
    assert gateway.stored(response.json()["file_key"])


def test_an_outage_answers_503_with_retry_after_in_bounded_time_and_the_next_identical_request_stores_it(
    gateway, storage
):
    image_request = {"seed": new_seed(), "size": 64}
    speech_request = {"seed": new_seed()}
    generated = {capability: gateway.generated(capability) for capability in ("images", "audio")}
    spooled_before = {capability: gateway.spooled(capability) for capability in ("images", "audio")}

    storage.set_down(True)
    FIGURES.inject()
    answers = {}
    for capability, call, request in (
        ("images", gateway.image, image_request),
        ("audio", gateway.speech, speech_request),
    ):
        started = time.monotonic()
        answers[capability] = FIGURES.record(call(**request), fault=True)
        elapsed = time.monotonic() - started
        FIGURES.timing("outage: answered 503 in", elapsed)
        assert answers[capability].status_code == 503, answers[capability].text
        assert int(answers[capability].headers["Retry-After"]) > 0
        assert "kept" in answers[capability].json()["error"]
        assert elapsed < OUTAGE_ANSWER_BOUND_S
    keys = {capability: newly_spooled(gateway, capability, spooled_before[capability]) for capability in answers}
    FIGURES.spooled(*keys.values())
    assert {capability: gateway.generated(capability) for capability in answers} == {
        capability: count + 1 for capability, count in generated.items()
    }

    # Asked again while storage is still down: the spooled output is offered again, not generated again.
    again = FIGURES.record(gateway.image(**image_request), fault=True)
    assert again.status_code == 503
    assert gateway.generated("images") == generated["images"] + 1

    storage.set_down(False)
    image = FIGURES.record(gateway.image(**image_request))
    speech = FIGURES.record(gateway.speech(**speech_request))

    assert image.status_code == 200, image.text
    assert speech.status_code == 200, speech.text
    assert image.json()["file_key"] == keys["images"] and image.json()["cached"] is True
    assert speech.json()["file_key"] == keys["audio"] and speech.json()["cached"] is True
    assert speech.json()["duration_s"] > 0
    assert gateway.stored_content_type(keys["images"]) == "image/png"
    assert gateway.stored_content_type(keys["audio"]) == "audio/wav"
    assert {capability: gateway.generated(capability) for capability in answers} == {
        capability: count + 1 for capability, count in generated.items()
    }
    assert keys["images"] not in gateway.spooled("images")
    assert keys["audio"] not in gateway.spooled("audio")


def test_the_background_drain_stores_outage_outputs_without_any_request(gateway, storage):
    generated = {capability: gateway.generated(capability) for capability in ("images", "audio")}
    spooled_before = {capability: gateway.spooled(capability) for capability in ("images", "audio")}
    storage.set_down(True)
    FIGURES.inject()
    assert FIGURES.record(gateway.image(), fault=True).status_code == 503
    assert FIGURES.record(gateway.speech(), fault=True).status_code == 503
    keys = [newly_spooled(gateway, capability, spooled_before[capability]) for capability in ("images", "audio")]
    FIGURES.spooled(*keys)

    storage.set_down(False)
    FIGURES.timing("drain: stored after", gateway.wait_until_stored(keys, timeout_s=DRAIN_WAIT_S))

    assert not any(key in gateway.spooled(key.partition("/")[0]) for key in keys)
    assert {capability: gateway.generated(capability) for capability in generated} == {
        capability: count + 1 for capability, count in generated.items()
    }


@pytest.fixture(scope="module")
def crash(composition, storage):
    """Storage down; image A answered 503 (so it is spooled); image B being generated; then the image service
    is killed (SIGKILL; circus restarts it) and storage comes back."""
    a_request = {"seed": new_seed(), "size": 64}
    spooled_before = composition.spooled("images")
    storage.set_down(True)
    FIGURES.inject(2)
    try:
        spooled = FIGURES.record(composition.image(**a_request), fault=True)
        assert spooled.status_code == 503, spooled.text
        key = newly_spooled(composition, "images", spooled_before)
        FIGURES.spooled(key)
        with ThreadPoolExecutor(max_workers=3) as pool:
            # Big and slow on purpose: still denoising when the kill comes, after two storage lookups.
            in_flight = pool.submit(composition.image, size=1024, steps=30)
            time.sleep(2 * (STORAGE_RETRY_BUDGET_S + STORAGE_TIMEOUT_S) + 2)
            victim = composition.process("TextToImage")
            victim.kill()
            killed_at = time.monotonic()
            storage.set_down(False)
            others = [pool.submit(composition.speech), pool.submit(composition.caption)]
            b = in_flight.result()
            b_answered_in = time.monotonic() - killed_at
            others = [future.result() for future in others]
    finally:
        storage.set_down(False)
    FIGURES.record(b, fault=True)
    for response in others:
        FIGURES.record(response, fault=True)
    composition.wait_until_stored([key], timeout_s=240)
    FIGURES.timing("crash: spooled output stored after", time.monotonic() - killed_at)
    composition.wait_until_serving(("images",), timeout_s=240)
    FIGURES.timing("crash: image service back after", time.monotonic() - killed_at)
    return SimpleNamespace(a_request=a_request, key=key, b=b, b_answered_in=b_answered_in, others=others)


def test_an_output_spooled_before_a_crash_reaches_storage_after_the_restart_without_generating_again(gateway, crash):
    assert gateway.stored(crash.key)
    assert crash.key not in gateway.spooled("images")
    generated = gateway.generated("images")
    again = FIGURES.record(gateway.image(**crash.a_request))
    assert again.status_code == 200, again.text
    assert again.json()["file_key"] == crash.key and again.json()["cached"] is True
    assert gateway.generated("images") == generated


def test_other_capabilities_keep_working_while_a_killed_service_restarts(crash):
    assert [response.status_code for response in crash.others] == [200, 200]


def test_a_request_in_flight_when_its_service_dies_answers_503_with_retry_after(crash):
    # The gateway's client (aiohttp) reports the dropped connection as ServerDisconnectedError, which
    # `services.gateway.forward` does not catch: the request is answered 500.
    assert crash.b.status_code == 503, crash.b.text
    assert int(crash.b.headers["Retry-After"]) > 0
    assert "Image generation is unavailable" in crash.b.json()["error"]
    assert crash.b_answered_in < BACKEND_TIMEOUT_S + 5

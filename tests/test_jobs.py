"""Durable jobs against one real composition on the embedded job store (SQLite): what `shared/API.md`
"Jobs" promises, one test each. The composition is started once for the module; the restart test comes
last, since it restarts it.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import httpx
import pytest

from testbed import jobs
from testbed.composition import (
    API_KEY,
    AUTH,
    IMAGE_MAX_CONCURRENCY,
    Composition,
    FaultyStorage,
    MemoryWatch,
    Suspended,
    new_seed,
)

OTHER_KEY = "jobs-other-key-Hk29sLq"
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}
JOB_CONCURRENCY = IMAGE_MAX_CONCURRENCY  # the image service refuses (busy) any call past this many at once
# The burst; GENMEDIA_JOBS_BURST sets a smaller one for a quick local run on a crowded machine.
BURST = int(os.environ.get("GENMEDIA_JOBS_BURST", "1000"))
# Long enough that a model service held still (SIGSTOP) by a test is still awaited when it resumes.
BACKEND_TIMEOUT_S = 120


def image_body(seed: int | None = None, **fields) -> dict:
    return {"prompt": "a lighthouse", "width": 64, "height": 64, "seed": new_seed() if seed is None else seed, **fields}


@pytest.fixture(scope="module")
def storage():
    with FaultyStorage(service_key="jobs-service-role-key") as fake:
        yield fake


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("jobs")


def compose(tiny_store, work, storage) -> Composition:
    return Composition(
        tiny_store,
        work,
        storage,
        GATEWAY_API_KEYS=f"{API_KEY},{OTHER_KEY}",
        JOB_CONCURRENCY=str(JOB_CONCURRENCY),
        BACKEND_TIMEOUT_S=str(BACKEND_TIMEOUT_S),
    )


@pytest.fixture(scope="module")
def gateway(tiny_store, work, storage):
    holder = {"composition": compose(tiny_store, work, storage).start()}
    yield holder
    holder["composition"].stop()


@pytest.fixture
def composition(gateway) -> Composition:
    return gateway["composition"]


def test_a_job_streams_its_events_and_succeeds_with_the_sync_routes_result(composition):
    body = image_body(steps=3)
    submitted = jobs.submit(composition.url, "generate_image", body, AUTH)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["status"] == "queued" and job["kind"] == "generate_image"
    assert (job["status_url"], job["events_url"]) == (f"/jobs/{job['id']}", f"/jobs/{job['id']}/events")

    seen = list(jobs.events(composition.url, job["id"], AUTH))

    ids = [int(event_id) for event_id, _ in seen]
    assert ids == sorted(set(ids)), "event ids increase"
    # Each change is a version of the job: submitted, claimed, one per denoising step, finished (and the
    # stage changes between). A stream shows the latest at each look, so the ids tell what happened.
    assert ids[-1] >= 1 + 1 + 3 + 1
    final = seen[-1][1]
    assert final["status"] == "succeeded" and final["progress"] == 1.0 and final["error"] is None
    assert {status for _, event in seen for status in [event["status"]]} <= {"queued", "running", "succeeded"}
    sync = composition.post("/generate_image", json=body)
    assert sync.status_code == 200, sync.text
    assert sync.json()["cached"] is True, "the job stored the very output the sync route names"
    assert final["result"] == {**sync.json(), "cached": False}
    assert composition.stored(final["result"]["file_key"])


def test_a_seeded_job_whose_output_exists_never_wakes_the_model(composition):
    body = image_body()
    first = composition.post("/generate_image", json=body)
    assert first.status_code == 200, first.text
    generated = composition.generated("images")

    job = jobs.wait_for(composition.url, jobs.submit(composition.url, "generate_image", body, AUTH).json()["id"], AUTH)

    assert job["status"] == "succeeded" and job["result"] == {**first.json(), "cached": True}
    assert composition.generated("images") == generated


def test_an_unseeded_job_draws_its_seed_at_submit_and_speech_jobs_work(composition):
    submitted = jobs.submit(composition.url, "synthesize_speech", {"text": "A job.", "format": "ogg"}, AUTH)
    assert submitted.status_code == 202, submitted.text

    job = jobs.wait_for(composition.url, submitted.json()["id"], AUTH)

    assert job["status"] == "succeeded", job
    assert job["result"]["format"] == "ogg" and job["result"]["duration_s"] > 0
    assert job["result"]["file_key"].startswith("audio/") and composition.stored(job["result"]["file_key"])


def test_a_finished_jobs_stream_resumes_after_the_last_event_id(composition):
    job = jobs.submit(composition.url, "generate_image", image_body(), AUTH).json()
    seen = list(jobs.events(composition.url, job["id"], AUTH))
    last_id = seen[-1][0]

    assert list(jobs.events(composition.url, job["id"], AUTH, last_event_id=last_id)) == []
    assert [event["status"] for _, event in jobs.events(composition.url, job["id"], AUTH, last_event_id="1")] == [
        "succeeded"
    ]


def test_invalid_input_is_a_400_at_submit_and_makes_no_job(composition):
    for body, field in (
        ({"prompt": "", "width": 64, "height": 64}, "prompt"),
        ({"prompt": "x", "width": 65}, "width"),
        ({"prompt": "x", "webhook_events": ["finished"]}, "webhook_events"),
        ({"prompt": "x", "colour": "red"}, "colour"),
    ):
        response = jobs.submit(composition.url, "generate_image", body, AUTH)
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(field), response.text
    too_long_key = jobs.submit(composition.url, "generate_image", image_body(), AUTH, idempotency_key="k" * 256)
    assert too_long_key.status_code == 400 and too_long_key.json()["error"].startswith("Idempotency-Key")


def test_the_same_idempotency_key_gives_the_same_job_and_another_body_409(composition):
    key = f"order-{new_seed()}"
    body = image_body()
    first = jobs.submit(composition.url, "generate_image", body, AUTH, idempotency_key=key)
    again = jobs.submit(composition.url, "generate_image", body, AUTH, idempotency_key=key)
    other = jobs.submit(composition.url, "generate_image", {**body, "prompt": "a kite"}, AUTH, idempotency_key=key)
    another_key = jobs.submit(composition.url, "generate_image", body, OTHER, idempotency_key=key)

    assert first.status_code == 202 and again.status_code == 200, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409 and other.json()["error"].startswith("Idempotency-Key"), other.text
    assert another_key.status_code == 202 and another_key.json()["id"] != first.json()["id"]


def test_a_job_is_visible_only_to_the_key_that_made_it(composition):
    job = jobs.submit(composition.url, "generate_image", image_body(), AUTH).json()
    for path, method in ((f"/jobs/{job['id']}", "GET"), (f"/jobs/{job['id']}/events", "GET")):
        response = httpx.request(method, f"{composition.url}{path}", headers=OTHER, timeout=30)
        assert response.status_code == 404, response.text
        assert response.json() == {"error": "No job with that id for this API key."}
    canceled_by_other = httpx.post(f"{composition.url}/jobs/{job['id']}/cancel", headers=OTHER, timeout=30)
    assert canceled_by_other.status_code == 404
    assert jobs.get(composition.url, "0" * 32, AUTH).status_code == 404
    assert httpx.get(f"{composition.url}/jobs/{job['id']}", timeout=30).status_code == 401
    assert jobs.wait_for(composition.url, job["id"], AUTH)["status"] == "succeeded"


def test_cancel_of_a_queued_job_a_running_job_and_a_finished_job(composition):
    image_service = composition.process("TextToImage")
    bodies = [image_body() for _ in range(JOB_CONCURRENCY + 1)]
    with Suspended(image_service):  # held still: the first JOB_CONCURRENCY jobs run, the last waits
        submitted = [jobs.submit(composition.url, "generate_image", body, AUTH).json() for body in bodies]
        running = [jobs.wait_for(composition.url, job["id"], AUTH, statuses=("running",)) for job in submitted[:-1]]
        queued = jobs.get(composition.url, submitted[-1]["id"], AUTH).json()
        assert queued["status"] == "queued" and queued["queue_position"] == 0, queued

        canceled_queued = httpx.post(f"{composition.url}/jobs/{queued['id']}/cancel", headers=AUTH, timeout=30)
        canceled_running = httpx.post(f"{composition.url}/jobs/{running[0]['id']}/cancel", headers=AUTH, timeout=30)

    assert canceled_queued.status_code == 200 and canceled_queued.json()["status"] == "canceled"
    assert canceled_running.status_code == 200 and canceled_running.json()["status"] == "canceled"
    finished = [jobs.wait_for(composition.url, job["id"], AUTH) for job in running[1:]]
    assert [job["status"] for job in finished] == ["succeeded"] * (JOB_CONCURRENCY - 1)
    never_ran = jobs.get(composition.url, queued["id"], AUTH).json()
    assert never_ran["status"] == "canceled" and never_ran["started_at"] is None and never_ran["result"] is None
    discarded = jobs.get(composition.url, running[0]["id"], AUTH).json()
    assert discarded["status"] == "canceled" and discarded["result"] is None
    again = httpx.post(f"{composition.url}/jobs/{finished[0]['id']}/cancel", headers=AUTH, timeout=30)
    assert again.status_code == 409 and "already succeeded" in again.json()["error"]


def test_cancel_of_a_running_image_job_stops_its_denoising_and_stores_nothing(composition):
    image_service = composition.process("TextToImage")
    stopped = composition.metric("genmedia_generations_stopped_total")
    generated = composition.generated("images")
    job = jobs.submit(composition.url, "generate_image", image_body(width=256, height=256, steps=100), AUTH).json()
    for _, seen in jobs.events(composition.url, job["id"], AUTH):
        if (seen["stage"] or "").startswith("denoising"):
            break
    with Suspended(image_service):  # held still, so the cancel lands with most steps to go
        canceled = httpx.post(f"{composition.url}/jobs/{job['id']}/cancel", headers=AUTH, timeout=30)

    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    deadline = time.monotonic() + 300
    while composition.metric("genmedia_generations_stopped_total") == stopped:
        assert time.monotonic() < deadline, "the image service denoised on after its job was canceled"
        time.sleep(0.2)
    assert composition.generated("images") == generated
    assert jobs.get(composition.url, job["id"], AUTH).json()["result"] is None


def test_a_burst_of_1000_jobs_waits_in_the_store_not_on_the_image_service(composition):
    def image_calls() -> float:
        return composition.metric("genmedia_gateway_forwarded_total", service="TextToImage")

    def upload_failures() -> float:
        return composition.metric("genmedia_storage_failures_total", capability=composition.ROLES["images"])

    calls, failures, generated = image_calls(), upload_failures(), composition.generated("images")
    watch = MemoryWatch(composition).start()
    watch.sample()
    gateway_before = watch.peak["Gateway"]

    bodies = [image_body(steps=1) for _ in range(BURST)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda body: jobs.submit(composition.url, "generate_image", body, AUTH), bodies))
    assert [answer.status_code for answer in answers] == [202] * BURST
    ids = [answer.json()["id"] for answer in answers]
    # Jobs run oldest first, so once the last one ended the others have too, bar the few still in flight.
    jobs.wait_for(composition.url, ids[-1], AUTH, timeout_s=1800)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda job_id: jobs.wait_for(composition.url, job_id, AUTH)["status"], ids))
    watch.stop()

    assert statuses == ["succeeded"] * BURST
    # The image service answers "busy" to any call beyond its max_concurrency (= JOB_CONCURRENCY), and the
    # job would call again. Every call is accounted for without one: one per job, plus one again for each
    # upload that failed under the load (spooled, answered 503, then found in the spool by the retry).
    assert image_calls() - calls == BURST + (upload_failures() - failures)
    assert composition.generated("images") - generated == BURST
    assert watch.peak["Gateway"] - gateway_before < 150, (
        f"gateway memory grew {watch.peak['Gateway'] - gateway_before} MB"
    )


def test_a_restarted_gateway_finishes_every_queued_and_running_job(gateway, tiny_store, work, storage):
    composition = gateway["composition"]
    image_service = composition.process("TextToImage")
    image_service.send_signal(signal.SIGSTOP)  # so that jobs are surely running and queued when it stops
    submitted = [jobs.submit(composition.url, "generate_image", image_body(), AUTH).json() for _ in range(10)]
    for job in submitted[:JOB_CONCURRENCY]:
        jobs.wait_for(composition.url, job["id"], AUTH, statuses=("running",))
    before = [jobs.get(composition.url, job["id"], AUTH).json()["status"] for job in submitted]
    assert before.count("running") == JOB_CONCURRENCY and before.count("queued") == 10 - JOB_CONCURRENCY

    composition.kill()  # no clean shutdown: a crash, or a lost node
    gateway["composition"] = restarted = compose(tiny_store, work, storage).start()

    after = [jobs.wait_for(restarted.url, job["id"], AUTH, timeout_s=240) for job in submitted]
    assert [job["status"] for job in after] == ["succeeded"] * 10
    assert all(restarted.stored(job["result"]["file_key"]) for job in after)

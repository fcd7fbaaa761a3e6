"""Two gateway replicas on one PostgreSQL job store: any replica answers for any job, and a replica that
dies mid-job has it finished by the other, its output generated once. One pair for the module; the test
that kills replica A comes last.
"""

from __future__ import annotations

import concurrent.futures
import signal

import pytest

from testbed import jobs
from testbed.composition import AUTH, Composition, FaultyStorage, new_seed


def image_body() -> dict:
    return {"prompt": "a lighthouse", "width": 64, "height": 64, "seed": new_seed()}


@pytest.fixture(scope="module")
def storage():
    with FaultyStorage(service_key="replicas-service-role-key") as fake:
        yield fake


@pytest.fixture(scope="module")
def replicas(tiny_store, storage, postgres, tmp_path_factory):
    job_store_url = postgres.new_database()
    pair = [
        Composition(tiny_store, tmp_path_factory.mktemp(f"replica-{name}"), storage, JOB_STORE_URL=job_store_url)
        for name in "ab"
    ]
    try:
        # Started together: the second replica's schema set-up waits on the first's (an advisory lock).
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(Composition.start, pair))
        yield pair
    finally:
        for composition in pair:
            composition.stop()


def test_a_job_submitted_on_one_replica_is_answered_and_streamed_by_the_other(replicas):
    a, b = replicas
    job = jobs.submit(a.url, "generate_image", image_body(), AUTH).json()

    streamed = list(jobs.events(b.url, job["id"], AUTH))

    assert streamed[-1][1]["status"] == "succeeded"
    assert jobs.get(b.url, job["id"], AUTH).json() == jobs.get(a.url, job["id"], AUTH).json() == streamed[-1][1]


def test_a_replica_killed_mid_job_has_it_finished_by_the_other_and_generated_once(replicas, storage):
    a, b = replicas
    a.process("TextToImage").send_signal(signal.SIGSTOP)  # A's call hangs: the job is surely mid-way when A dies
    b_gateway = b.process("Gateway")
    b_gateway.send_signal(signal.SIGSTOP)  # so that A, not B, claims it
    try:
        job = jobs.submit(a.url, "generate_image", image_body(), AUTH).json()
        running = jobs.wait_for(a.url, job["id"], AUTH, statuses=("running",))
        a.kill()
    finally:
        b_gateway.send_signal(signal.SIGCONT)
    generated = b.generated("images")

    finished = jobs.wait_for(b.url, job["id"], AUTH, timeout_s=120)

    assert finished["status"] == "succeeded", finished
    assert finished["started_at"] == running["started_at"], "the same job, taken over"
    key = finished["result"]["file_key"]
    assert storage.upload_attempts[key] == 1, "generated and stored once"
    assert b.generated("images") - generated == 1

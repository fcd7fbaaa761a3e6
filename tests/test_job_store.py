"""The job store on both of its databases (SQLite, and a real PostgreSQL): claims, leases, retention, schema.

The clock is the store's own (`clock=`), moved by the test, so a lapsed lease is a fact, not a wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest
from sqlalchemy import update

from genmedia.jobs.schema import SCHEMA_VERSION, create_engine_for, migrate, schema_version
from genmedia.jobs.store import LEASE_S, JobStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def store(database_url):
    engine = create_engine_for(database_url)
    migrate(engine)
    clock = Clock()
    yield JobStore(engine, retention_s=3600, clock=clock)
    engine.dispose()


def submit(store: JobStore, n: int = 0, kind: str = "generate_image", **extra) -> dict:
    body = {"prompt": f"job {n}", "seed": n}
    fields = {"idempotency_key": None, "webhook": None, "webhook_events": ("completed",), **extra}
    job, _ = asyncio.run(store.submit(kind=kind, owner="me", request=body, submitted=body, **fields))
    return job


def test_jobs_are_claimed_oldest_first_with_their_queue_position(store):
    jobs = []
    for n in range(3):
        jobs.append(submit(store, n))
        store.clock.now += 1
    assert [job["queue_position"] for job in jobs] == [0, 1, 2]

    claimed = asyncio.run(store.claim("generate_image", "runner-a"))

    assert claimed["id"] == jobs[0]["id"]
    assert asyncio.run(store.get(jobs[2]["id"], "me"))["queue_position"] == 1
    assert asyncio.run(store.claim("synthesize_speech", "runner-a")) is None


def test_a_lapsed_lease_is_taken_over_and_the_first_runner_changes_nothing(store):
    job = submit(store)
    asyncio.run(store.claim("generate_image", "runner-a"))
    assert asyncio.run(store.claim("generate_image", "runner-b")) is None

    store.clock.now += LEASE_S + 1
    taken = asyncio.run(store.claim("generate_image", "runner-b"))

    assert taken["id"] == job["id"] and taken["attempts"] == 2
    assert not asyncio.run(store.renew(job["id"], "runner-a"))
    assert not asyncio.run(store.complete(job["id"], "runner-a", result={"from": "a"}))
    assert asyncio.run(store.complete(job["id"], "runner-b", result={"from": "b"}))
    assert asyncio.run(store.get(job["id"], "me"))["result"] == {"from": "b"}


def test_concurrent_claims_never_give_one_job_twice(store):
    submitted = {submit(store, n)["id"] for n in range(20)}

    def claim_all(runner: str) -> list[str]:
        claimed = []
        while (job := asyncio.run(store.claim("generate_image", runner))) is not None:
            claimed.append(job["id"])
        return claimed

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        claims = [claimed for part in pool.map(claim_all, ["a", "b", "c", "d"]) for claimed in part]

    assert sorted(claims) == sorted(submitted)


def test_a_released_job_goes_back_to_the_queue(store):
    job = submit(store)
    asyncio.run(store.claim("generate_image", "runner-a"))

    assert asyncio.run(store.release("runner-a")) == 1
    again = asyncio.run(store.claim("generate_image", "runner-b"))

    assert again["id"] == job["id"] and again["attempts"] == 1


def test_finished_jobs_are_deleted_after_the_retention(store):
    job = submit(store)
    asyncio.run(store.cancel(job["id"], "me"))
    store.clock.now += 3600 - 1
    assert asyncio.run(store.delete_expired()) == 0

    store.clock.now += 2

    assert asyncio.run(store.delete_expired()) == 1
    assert asyncio.run(store.get(job["id"], "me")) is None


def test_a_schema_newer_than_the_code_stops_the_start(database_url):
    engine = create_engine_for(database_url)
    assert migrate(engine) == 0
    assert migrate(engine) == SCHEMA_VERSION
    with engine.begin() as connection:
        connection.execute(update(schema_version).values(version=SCHEMA_VERSION + 1))

    with pytest.raises(RuntimeError, match="newer than this gateway"):
        migrate(engine)
    engine.dispose()

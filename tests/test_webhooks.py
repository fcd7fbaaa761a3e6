"""Webhooks (shared/API.md "Jobs"): target checks, and the signed outbox against a real loopback receiver.

The outbox runs on a real job store, SQLite and PostgreSQL (the schema every gateway migrates at start);
each receiver is an HTTP server on 127.0.0.1 that verifies every signature with the `standardwebhooks` package. The
refusal tests never connect anywhere: a refused address is refused before any connection is made.
The same promises through a served gateway are tests/test_job_webhooks.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
import uuid

import pytest
from sqlalchemy import delete, insert, select, update

from genmedia.contract.errors import InvalidInput
from genmedia.jobs import schema
from genmedia.jobs.webhooks import (
    WebhookSender,
    check_webhook_target,
    deliveries,
    enqueue_webhook,
    resolve_webhook_target,
    retry_delay_s,
    webhook_deliveries,
)
from genmedia.settings import Settings
from testbed.servers import server_missing
from testbed.serving import free_port
from testbed.webhook_receiver import (
    ENDLESS,
    REDIRECT,
    SILENT,
    WebhookReceiver,
    new_secret,
    self_signed_certificate,
)

SECRET = new_secret()


# Targets: refused at submit without WEBHOOK_ALLOW_PRIVATE, before any connection.


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://10.0.0.1/hook", "private"),
        ("https://192.168.1.20/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fd00:ec2::254]/", "metadata"),
        ("https://100.100.100.200/", "metadata"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://100.64.0.1/hook", "reserved"),
        ("https://localhost/hook", "loopback"),  # a name that resolves to loopback
    ],
)
def test_webhooks_to_non_public_addresses_are_refused(url, reason):
    with pytest.raises(InvalidInput) as refused:
        check_webhook_target(url, allow_private=False)
    assert refused.value.status == 400
    assert refused.value.message.startswith("webhook: ") and reason in refused.value.message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://93.184.215.14/hook", "https://"),  # a public address, but not over TLS
        ("ftp://93.184.215.14/hook", "https://"),
        ("https://user:pass@93.184.215.14/hook", "credentials"),
        ("not a url", "https://"),
        ("https:///hook", "no host"),
    ],
)
def test_webhook_urls_that_are_not_https_or_carry_credentials_are_refused(url, problem):
    with pytest.raises(InvalidInput) as refused:
        check_webhook_target(url, allow_private=False)
    assert refused.value.message.startswith("webhook: ") and problem in refused.value.message


def test_a_public_address_is_accepted():
    target = resolve_webhook_target("https://93.184.215.14:8443/hook?x=1", allow_private=False)
    assert target.address == "93.184.215.14"
    assert str(target.pinned_url) == "https://93.184.215.14:8443/hook?x=1"


def test_allow_private_admits_loopback_over_http():
    target = resolve_webhook_target("http://localhost:8080/hook", allow_private=True)
    assert target.address == "127.0.0.1"
    assert str(target.pinned_url) == "http://127.0.0.1:8080/hook"
    check_webhook_target("https://[::1]/hook", allow_private=True)


def test_retries_back_off_exponentially_with_jitter_within_the_window():
    window = 3600
    for attempts in range(1, 12):
        delay = retry_delay_s(attempts, window)
        ceiling = min(5 * 2 ** (attempts - 1), window / 4)
        assert ceiling / 2 <= delay <= ceiling
    assert len({retry_delay_s(1, window) for _ in range(20)}) > 1  # jittered
    assert retry_delay_s(1, 60) <= 60 / 720  # a short window retries sooner


# The outbox, on a real SQLite job store.


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    engine = schema.create_engine_for(url)
    schema.migrate(engine)
    yield engine
    engine.dispose()


def settings(**overrides) -> Settings:
    values = {"webhook_secret": SECRET, "webhook_retry_window_s": 60.0, "webhook_allow_private": True}
    return dataclasses.replace(Settings(), **{**values, **overrides})


def add_job(engine, webhook: str | None, events: tuple[str, ...] = ("completed",), status: str = "succeeded") -> dict:
    """A job row as the job store writes it; returns the job as GET /jobs/{id} answers it."""
    job_id = f"job_{uuid.uuid4().hex}"
    now = time.time()
    with engine.begin() as connection:
        connection.execute(
            insert(schema.jobs).values(
                id=job_id,
                kind="generate_image",
                owner="",
                status=status,
                request={"prompt": "a lighthouse", "seed": 7},
                created_at=now,
                webhook=webhook,
                webhook_events=list(events),
            )
        )
    return {"id": job_id, "kind": "generate_image", "status": status, "progress": 1.0, "result": {"seed": 7}}


def enqueue(engine, job: dict, event_type: str = "job.completed") -> str | None:
    with engine.begin() as connection:
        return enqueue_webhook(connection, job, event_type)


def delivery_state(engine, job_id: str) -> list[dict]:
    with engine.connect() as connection:
        return deliveries(connection, job_id)


def run_senders(senders: list[WebhookSender], until, timeout_s: float = 30) -> None:
    """Run the senders' loops until `until()` holds (AssertionError at the deadline), then stop them."""

    async def main():
        tasks = [asyncio.create_task(sender.run()) for sender in senders]
        try:
            deadline = time.monotonic() + timeout_s
            while not until():
                assert time.monotonic() < deadline, f"not done after {timeout_s} s"
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def settled(engine, job_id: str):
    return lambda: all(d["status"] != "pending" for d in delivery_state(engine, job_id))


def test_a_receiver_failing_twice_then_answering_200_gets_the_event_with_the_same_id_and_a_valid_signature(engine):
    with WebhookReceiver(SECRET, [500, 503, 200]) as receiver:
        job = add_job(engine, receiver.url)
        webhook_id = enqueue(engine, job)
        run_senders([WebhookSender(engine, settings())], settled(engine, job["id"]))
        tries = receiver.requests()
    assert len(tries) == 3
    assert {received.headers["webhook-id"] for received in tries} == {webhook_id}
    for received in tries:
        assert received.error is None, received.error  # standardwebhooks verified the signature
        assert received.verified["type"] == "job.completed"
        assert received.verified["data"] == job
        assert received.headers["content-type"] == "application/json"
    assert len({received.body for received in tries}) == 1  # the same body every time
    [delivery] = delivery_state(engine, job["id"])
    assert delivery["id"] == webhook_id and delivery["type"] == "job.completed"
    assert (delivery["status"], delivery["attempts"], delivery["response_status"]) == ("delivered", 3, 200)
    assert delivery["error"] is None and delivery["next_attempt_at"] is None


def test_a_receiver_down_past_the_window_leaves_the_job_succeeded_and_the_delivery_failed(engine):
    job = add_job(engine, f"http://127.0.0.1:{free_port()}/hook")  # nothing listens there
    enqueue(engine, job)
    run_senders([WebhookSender(engine, settings(webhook_retry_window_s=1.0))], settled(engine, job["id"]))
    [delivery] = delivery_state(engine, job["id"])
    assert delivery["status"] == "failed" and delivery["attempts"] >= 2
    assert delivery["response_status"] is None and "ConnectError" in delivery["error"]
    with engine.connect() as connection:
        assert connection.execute(select(schema.jobs.c.status).where(schema.jobs.c.id == job["id"])).scalar() == (
            "succeeded"
        )


def test_a_failing_answer_is_recorded_with_its_status(engine):
    with WebhookReceiver(SECRET, [410]) as receiver:
        job = add_job(engine, receiver.url)
        enqueue(engine, job)
        run_senders([WebhookSender(engine, settings(webhook_retry_window_s=0.5))], settled(engine, job["id"]))
    [delivery] = delivery_state(engine, job["id"])
    assert (delivery["status"], delivery["response_status"], delivery["error"]) == ("failed", 410, "answered 410")


def test_a_target_checked_again_at_delivery_is_refused_before_connecting(engine):
    with WebhookReceiver(SECRET) as receiver:
        # Accepted while private targets were allowed; https, so the address is what refuses it.
        job = add_job(engine, receiver.url.replace("http://", "https://"))
        enqueue(engine, job)
        sender = WebhookSender(engine, settings(webhook_allow_private=False, webhook_retry_window_s=0.5))
        run_senders([sender], settled(engine, job["id"]))
        assert receiver.requests() == []
    [delivery] = delivery_state(engine, job["id"])
    assert delivery["status"] == "failed" and "loopback" in delivery["error"]


def test_a_try_connects_to_the_checked_address_with_the_urls_own_host_header(engine):
    with WebhookReceiver(SECRET) as receiver:
        job = add_job(engine, f"http://localhost:{receiver.port}/hook?source=genmedia")
        enqueue(engine, job)
        run_senders([WebhookSender(engine, settings())], settled(engine, job["id"]))
        [received] = receiver.requests()  # the receiver listens on 127.0.0.1, the address checked
    assert received.headers["host"] == f"localhost:{receiver.port}"
    assert received.path == "/hook?source=genmedia" and received.error is None


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A certificate for `localhost`, one for another name, and a client context trusting both."""
    directory = tmp_path_factory.mktemp("tls")
    try:
        made = {name: self_signed_certificate(directory, name) for name in ("localhost", "other.genmedia.test")}
    except FileNotFoundError as missing:
        server_missing(str(missing))
    trusted = ssl.create_default_context()
    for certificate, _ in made.values():
        trusted.load_verify_locations(certificate)
    return made, trusted


def test_an_https_try_to_the_checked_address_verifies_the_certificate_against_the_urls_name(engine, certificates):
    made, trusted = certificates
    # The try connects to 127.0.0.1 (the address checked); TLS still names, and checks, `localhost`.
    with WebhookReceiver(SECRET, tls=made["localhost"]) as receiver:
        job = add_job(engine, receiver.url)
        enqueue(engine, job)
        run_senders([WebhookSender(engine, settings(), tls_verify=trusted)], settled(engine, job["id"]))
        [received] = receiver.requests()
    assert received.error is None and received.headers["host"] == f"localhost:{receiver.port}"
    assert delivery_state(engine, job["id"])[0]["status"] == "delivered"


def test_an_https_try_refuses_a_certificate_for_another_name(engine, certificates):
    made, trusted = certificates
    with WebhookReceiver(SECRET, tls=made["other.genmedia.test"]) as receiver:
        job = add_job(engine, receiver.url)
        enqueue(engine, job)
        sender = WebhookSender(engine, settings(webhook_retry_window_s=0.5), tls_verify=trusted)
        run_senders([sender], settled(engine, job["id"]))
        assert receiver.requests() == []
    [delivery] = delivery_state(engine, job["id"])
    assert delivery["status"] == "failed" and "ConnectError" in delivery["error"]


def test_redirects_are_not_followed(engine):
    with WebhookReceiver(SECRET, [REDIRECT]) as receiver:
        job = add_job(engine, receiver.url)
        enqueue(engine, job)
        run_senders([WebhookSender(engine, settings(webhook_retry_window_s=0.5))], settled(engine, job["id"]))
        paths = {received.path for received in receiver.requests()}
    assert paths == {"/hook"}
    [delivery] = delivery_state(engine, job["id"])
    assert (delivery["status"], delivery["response_status"]) == ("failed", 307)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)  # the clock, not the database, is tested
def test_a_receiver_that_does_not_answer_within_10_s_fails_the_try(engine):
    with WebhookReceiver(SECRET, [SILENT]) as receiver:
        job = add_job(engine, receiver.url)
        enqueue(engine, job)
        sender = WebhookSender(engine, settings(webhook_retry_window_s=1.0))
        run_senders([sender], settled(engine, job["id"]), timeout_s=60)
        assert len(receiver.requests()) == 1
    [delivery] = delivery_state(engine, job["id"])
    assert (delivery["status"], delivery["error"]) == ("failed", "no answer within 10 s")


def test_an_endless_answer_is_read_only_a_few_kb(engine):
    with WebhookReceiver(SECRET, [ENDLESS]) as receiver:
        job = add_job(engine, receiver.url)
        enqueue(engine, job)
        # Reading the whole answer would never end: the try would time out and be retried, never delivered.
        run_senders([WebhookSender(engine, settings())], settled(engine, job["id"]))
        assert len(receiver.requests()) == 1
    [delivery] = delivery_state(engine, job["id"])
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 1)


def test_two_senders_on_one_database_send_each_event_once(engine):
    with WebhookReceiver(SECRET) as receiver:
        jobs = [add_job(engine, receiver.url) for _ in range(24)]
        ids = {enqueue(engine, job) for job in jobs}

        def all_delivered():
            with engine.connect() as connection:
                statuses = connection.execute(select(webhook_deliveries.c.status)).scalars().all()
            return statuses.count("delivered") == len(jobs)

        run_senders([WebhookSender(engine, settings()), WebhookSender(engine, settings())], all_delivered)
        sent = [received.headers["webhook-id"] for received in receiver.requests()]
    assert sorted(sent) == sorted(ids)  # each once: claims are leased


def test_a_lapsed_lease_is_taken_by_another_sender(engine):
    with WebhookReceiver(SECRET) as receiver:
        job = add_job(engine, receiver.url)
        webhook_id = enqueue(engine, job)
        with engine.begin() as connection:  # a sender that claimed the delivery, then died
            connection.execute(
                update(webhook_deliveries).values(lease_owner="webhooks-dead", lease_expires_at=time.time() - 1)
            )
        run_senders([WebhookSender(engine, settings())], settled(engine, job["id"]))
        assert [received.headers["webhook-id"] for received in receiver.requests()] == [webhook_id]


def test_only_the_events_the_job_asked_for_are_queued(engine):
    job = add_job(engine, "https://hooks.example.com/genmedia", events=["started", "completed"])
    assert enqueue(engine, job, "started") is not None  # the job store names events as webhook_events do
    assert enqueue(engine, job, "job.progress") is None
    assert enqueue(engine, job, "job.completed") is not None
    assert enqueue(engine, add_job(engine, None), "job.completed") is None  # no webhook
    assert [d["type"] for d in delivery_state(engine, job["id"])] == ["job.started", "job.completed"]
    with pytest.raises(ValueError, match="unknown webhook event"):
        enqueue(engine, job, "job.exploded")


def test_a_progress_event_not_yet_sent_is_replaced_by_the_newer_one(engine):
    job = add_job(engine, "https://hooks.example.com/genmedia", events=["progress"], status="running")
    first = enqueue(engine, {**job, "progress": 0.25}, "job.progress")
    assert enqueue(engine, {**job, "progress": 0.5}, "job.progress") == first
    with engine.connect() as connection:
        [payload] = connection.execute(select(webhook_deliveries.c.payload)).scalars().all()
    assert '"progress":0.5' in payload


def test_deleting_a_job_deletes_its_deliveries(engine):
    job = add_job(engine, "https://hooks.example.com/genmedia")
    enqueue(engine, job)
    with engine.begin() as connection:
        connection.execute(delete(schema.jobs).where(schema.jobs.c.id == job["id"]))
    assert delivery_state(engine, job["id"]) == []


def test_without_a_secret_nothing_is_sent(engine):
    with WebhookReceiver(SECRET) as receiver:
        job = add_job(engine, receiver.url)
        enqueue(engine, job)
        asyncio.run(asyncio.wait_for(WebhookSender(engine, settings(webhook_secret=None)).run(), 5))
        assert receiver.requests() == []

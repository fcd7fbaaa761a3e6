"""Webhooks of durable jobs through a served composition (shared/API.md "Jobs"), one test per promise.

Receivers are HTTP servers on 127.0.0.1 that verify every signature with the `standardwebhooks` package
(`testbed.webhook_receiver`). Two compositions, each started once for the module: `open_gateway` lets
webhooks reach loopback (WEBHOOK_ALLOW_PRIVATE=true: the receivers live there) and retries for a short
window; `gateway` is configured as in production and refuses such targets at submit, before any connection.
The outbox's own behaviour (redirects, read limits, leases, rebinding) is tests/test_webhooks.py.
"""

from __future__ import annotations

import time

import pytest

from testbed import jobs
from testbed.composition import AUTH, Composition, FaultyStorage, new_seed
from testbed.serving import free_port
from testbed.webhook_receiver import WebhookReceiver, new_secret
from tests.test_client import CLIENT_DIR, sdk_from

SECRET = new_secret()
RETRY_WINDOW_S = 5  # first retry after 5/720 s, doubling: a few tries in the window, then `failed`


def image_body(**fields) -> dict:
    return {"prompt": "a lighthouse", "width": 64, "height": 64, "seed": new_seed(), **fields}


@pytest.fixture(scope="module")
def storage():
    with FaultyStorage(service_key="webhooks-service-role-key") as fake:
        yield fake


@pytest.fixture(scope="module")
def open_gateway(tiny_store, tmp_path_factory, storage):
    composition = Composition(
        tiny_store,
        tmp_path_factory.mktemp("open-gateway"),
        storage,
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_RETRY_WINDOW_S=str(RETRY_WINDOW_S),
        WEBHOOK_ALLOW_PRIVATE="true",
    ).start()
    yield composition
    composition.stop()


@pytest.fixture(scope="module")
def gateway(tiny_store, tmp_path_factory, storage):
    composition = Composition(tiny_store, tmp_path_factory.mktemp("gateway"), storage, WEBHOOK_SECRET=SECRET)
    composition.server.start(ready_timeout_s=420)  # submits are refused before any model service is needed
    yield composition
    composition.stop()


def settled_deliveries(composition: Composition, job_id: str, count: int, timeout_s: float = 60) -> dict:
    """The job once it finished and `count` deliveries of it are no longer pending."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = jobs.get(composition.url, job_id, AUTH).json()
        deliveries = (job["webhook"] or {}).get("deliveries", [])
        finished = job["status"] in jobs.FINAL_STATUSES and len(deliveries) >= count
        if finished and all(delivery["status"] != "pending" for delivery in deliveries):
            return job
        assert time.monotonic() < deadline, f"deliveries of {job_id} not settled after {timeout_s} s: {job}"
        time.sleep(0.2)


# Refused at submit, without WEBHOOK_ALLOW_PRIVATE.


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:{port}/hook",
        "https://[::1]:{port}/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost:{port}/hook",  # a name that resolves to loopback
    ],
)
def test_webhooks_to_loopback_private_and_metadata_addresses_are_refused_at_submit(gateway, target):
    with WebhookReceiver(SECRET) as receiver:
        url = target.format(port=receiver.port)
        key = f"refused-{new_seed()}"
        refused = jobs.submit(gateway.url, "generate_image", image_body(webhook=url), AUTH, idempotency_key=key)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"].startswith("webhook: ")
        assert receiver.requests() == []
    # No job was made: the key is still free.
    assert jobs.submit(gateway.url, "generate_image", image_body(), AUTH, idempotency_key=key).status_code == 202


def test_http_webhooks_are_refused_without_allow_private(gateway):
    refused = jobs.submit(gateway.url, "generate_image", image_body(webhook="http://93.184.215.14/hook"), AUTH)
    assert refused.status_code == 400 and "https://" in refused.json()["error"]


# Delivered, retried, given up.


def test_a_receiver_failing_twice_then_answering_200_gets_the_event_with_the_same_id_and_a_valid_signature(
    open_gateway,
):
    with WebhookReceiver(SECRET, [500, 503, 200]) as receiver:
        submitted = jobs.submit(open_gateway.url, "generate_image", image_body(webhook=receiver.url), AUTH)
        assert submitted.status_code == 202, submitted.text
        job = settled_deliveries(open_gateway, submitted.json()["id"], count=1)
        tries = receiver.wait_for(3)
    assert job["status"] == "succeeded"
    [delivery] = job["webhook"]["deliveries"]
    assert (delivery["status"], delivery["attempts"], delivery["response_status"]) == ("delivered", 3, 200)
    assert [received.headers["webhook-id"] for received in tries] == [delivery["id"]] * 3
    for received in tries:
        assert received.error is None, received.error  # standardwebhooks verified the signature
        event = received.verified
        assert event["type"] == "job.completed"
        assert event["data"]["id"] == job["id"] and event["data"]["status"] == "succeeded"
        assert event["data"]["result"] == job["result"]


def test_a_receiver_down_past_the_window_leaves_the_job_succeeded_and_the_delivery_failed(open_gateway):
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    submitted = jobs.submit(open_gateway.url, "generate_image", image_body(webhook=down), AUTH)
    job = settled_deliveries(open_gateway, submitted.json()["id"], count=1, timeout_s=RETRY_WINDOW_S + 60)
    assert job["status"] == "succeeded" and job["result"]["file_key"]
    [delivery] = job["webhook"]["deliveries"]
    assert delivery["status"] == "failed" and delivery["attempts"] >= 2 and delivery["response_status"] is None


def test_started_and_completed_events_are_sent_when_asked_for(open_gateway):
    with WebhookReceiver(SECRET) as receiver:
        body = image_body(webhook=receiver.url, webhook_events=["started", "completed"])
        submitted = jobs.submit(open_gateway.url, "generate_image", body, AUTH)
        settled_deliveries(open_gateway, submitted.json()["id"], count=2)
        events = receiver.wait_for(2)
    assert sorted(received.verified["type"] for received in events) == ["job.completed", "job.started"]
    assert len({received.headers["webhook-id"] for received in events}) == 2


def test_the_client_submits_a_job_with_a_webhook_and_verifies_what_arrives(open_gateway):
    with sdk_from(CLIENT_DIR) as sdk, WebhookReceiver(SECRET) as receiver:
        with sdk.Genmedia(open_gateway.url, api_key=AUTH["Authorization"].removeprefix("Bearer ")) as client:
            job = client.submit_image_job(prompt="a kite", width=64, height=64, webhook=receiver.url)
            seen = [state.status for state in job.events(timeout_s=180)]
            result = job.wait()
        [received] = receiver.wait_for(1)
        event = sdk.verify_webhook(received.body, received.headers, SECRET)
    assert seen[-1] == "succeeded" and set(seen) <= {"queued", "running", "succeeded"}
    assert result.format == "png" and result.width == 64
    assert (event.type, event.job["id"], event.job["result"]["file_key"]) == ("job.completed", job.id, result.file_key)

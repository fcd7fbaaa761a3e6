"""The Python client SDK (`client/`): generated code that is current, and the hand-written `Genmedia` layer.

`make client` output is compared with a fresh generation here; the SDK's calls are checked against a fake
gateway (an httpx transport answering as the real one does). The SDK against a real, served gateway (the
built Bento) is in tests/test_bento.py.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import secrets
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from testbed.serving import free_port
from tools import client_sdk

CLIENT_DIR = client_sdk.CLIENT_DIR
HAND_WRITTEN = [
    "pyproject.toml",
    "README.md",
    "generator.yaml",
    "genmedia_client/__init__.py",
    "genmedia_client/gateway.py",
    "genmedia_client/jobs.py",
    "genmedia_client/results.py",
    "genmedia_client/webhooks.py",
    "genmedia_client/py.typed",
]
KEY = "client-test-key"
IMAGE = {
    "file_key": "images/abc.png",
    "public_url": "https://storage.example.com/images/abc.png",
    "seed": 7,
    "width": 256,
    "height": 128,
    "format": "png",
    "model": "text-to-image:v1",
    "cached": False,
}


@contextlib.contextmanager
def sdk_from(directory: Path):
    """`genmedia_client` imported from `directory` (a checkout's client/ or an install target), then forgotten."""

    def forget() -> dict:
        return {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "genmedia_client"}

    saved = forget()
    sys.path.insert(0, str(directory))
    try:
        module = importlib.import_module("genmedia_client")
        assert Path(module.__file__).is_relative_to(directory), module.__file__
        yield module
    finally:
        sys.path.remove(str(directory))
        forget()
        sys.modules.update(saved)


# The committed client is what `make client` generates, and regenerating never touches hand-written files.


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """A copy of client/ after `make client` ran in it."""
    copy = tmp_path_factory.mktemp("client") / "client"
    shutil.copytree(CLIENT_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    client_sdk.regenerate(copy)
    return copy


def test_committed_client_is_what_make_client_generates(regenerated):
    ignored = ("build", "genmedia_client.egg-info")  # what a `pip install ./client` leaves in the checkout
    stale = [path for path in client_sdk.differences(CLIENT_DIR, regenerated) if not path.startswith(ignored)]
    assert not stale, f"client/ differs from a fresh `make client` (run it and commit): {stale}"


def test_regenerating_keeps_the_hand_written_files(regenerated):
    for path in HAND_WRITTEN:
        assert (regenerated / path).read_bytes() == (CLIENT_DIR / path).read_bytes(), path
    generated = regenerated / "genmedia_client" / "generated"
    assert not (generated / "gateway.py").exists()
    assert (generated / "api" / "gateway" / "generate_image.py").is_file()


# The hand-written layer against a fake gateway.


class FakeGateway:
    """Answers like the gateway; records every request."""

    def __init__(self, routes: dict):
        self.routes = routes  # (method, path) -> list of httpx.Response, served in order (the last repeats)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes[(request.method, request.url.path)]
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
def sdk():
    with sdk_from(CLIENT_DIR) as module:
        yield module


def gateway_client(sdk, routes, api_key=KEY, **options):
    fake = FakeGateway(routes)
    client = sdk.Genmedia(
        "http://gateway.test", api_key, httpx_args={"transport": httpx.MockTransport(fake)}, **options
    )
    return client, fake


def test_generate_image_sends_a_flat_body_with_the_key_and_returns_the_result(sdk):
    client, fake = gateway_client(sdk, {("POST", "/generate_image"): [httpx.Response(200, json=IMAGE)]})
    result = client.generate_image(prompt="a boat", width=256, height=128, seed=7, format="png")
    assert result.public_url == IMAGE["public_url"] and result.width == 256
    assert result.format == "png"  # the API's name for the field
    [request] = fake.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    sent = json.loads(request.content)
    # The spec's fixed defaults (negative_prompt "") may come along; the API's names, never `format_`.
    assert sent.items() >= {"prompt": "a boat", "width": 256, "height": 128, "seed": 7, "format": "png"}.items()
    assert set(sent) <= {"prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "seed", "format"}


def test_synthesize_speech_sends_a_named_voice(sdk):
    speech = {
        "file_key": "audio/abc.mp3",
        "public_url": "https://storage.example.com/audio/abc.mp3",
        "sample_rate": 44100,
        "duration_s": 1.5,
        "format": "mp3",
        "model": "text-to-speech:v1",
        "cached": False,
    }
    client, fake = gateway_client(sdk, {("POST", "/synthesize_speech"): [httpx.Response(200, json=speech)]})
    assert client.synthesize_speech(text="Hi.", voice="alloy", format="mp3").duration_s == 1.5
    sent = json.loads(fake.requests[0].content)
    assert (sent["text"], sent["voice"], sent["format"]) == ("Hi.", "alloy", "mp3")


def test_no_api_key_sends_no_authorization(sdk):
    client, fake = gateway_client(sdk, {("POST", "/generate_image"): [httpx.Response(200, json=IMAGE)]}, api_key=None)
    client.generate_image(prompt="a boat")
    assert "authorization" not in fake.requests[0].headers


def test_errors_raise_with_status_message_and_retry_after(sdk):
    busy = httpx.Response(503, json={"error": "Image generation is unavailable"}, headers={"Retry-After": "30"})
    client, _ = gateway_client(sdk, {("POST", "/generate_image"): [busy]}, retries=0)
    with pytest.raises(sdk.GenmediaError) as raised:
        client.generate_image(prompt="a boat")
    assert (raised.value.status, raised.value.message, raised.value.retry_after) == (
        503,
        "Image generation is unavailable",
        30.0,
    )


def test_an_error_that_is_not_json_still_raises(sdk):
    client, _ = gateway_client(sdk, {("POST", "/synthesize_speech"): [httpx.Response(502, text="Bad gateway")]})
    with pytest.raises(sdk.GenmediaError) as raised:
        client.synthesize_speech(text="Hello.")
    assert raised.value.status == 502 and "Bad gateway" in raised.value.message


def test_caption_image_uploads_the_file_as_field_image(sdk, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG fake bytes")
    answer = httpx.Response(200, json={"caption": "a red square", "model": "image-captioning:v1"})
    client, fake = gateway_client(sdk, {("POST", "/caption_image"): [answer]})
    assert client.caption_image(photo).caption == "a red square"
    assert client.caption_image(photo.read_bytes()).caption == "a red square"
    with photo.open("rb") as file:
        client.caption_image(file)
    for request in fake.requests:
        assert request.headers["content-type"].startswith("multipart/form-data")
        assert b'name="image"' in request.content and b"\x89PNG fake bytes" in request.content


def test_the_default_timeout_outlasts_the_gateway(sdk):
    client, _ = gateway_client(sdk, {})
    assert client.api.get_httpx_client().timeout.read == sdk.DEFAULT_TIMEOUT_S > 960


def test_a_refused_connection_raises_genmedia_error(sdk):
    port = free_port()  # nothing listens there
    with sdk.Genmedia(f"http://127.0.0.1:{port}") as client, pytest.raises(sdk.GenmediaError) as raised:
        client.generate_image(prompt="a boat")
    assert raised.value.status == 503 and "could not reach the gateway" in raised.value.message
    assert raised.value.retry_after is None


# Retries of 429 and 503 after Retry-After: bounded, and they can be turned off.


def busy(status: int, retry_after: str) -> httpx.Response:
    return httpx.Response(status, json={"error": "busy"}, headers={"Retry-After": retry_after})


def test_429_and_503_are_retried_after_their_retry_after(sdk):
    answers = [busy(429, "0"), busy(503, "0"), httpx.Response(200, json=IMAGE)]
    client, fake = gateway_client(sdk, {("POST", "/generate_image"): answers})
    assert client.generate_image(prompt="a boat").file_key == IMAGE["file_key"]
    assert len(fake.requests) == 3
    assert len({request.content for request in fake.requests}) == 1  # the same body each time


def test_retries_are_bounded(sdk):
    client, fake = gateway_client(sdk, {("POST", "/generate_image"): [busy(503, "0")]}, retries=2)
    with pytest.raises(sdk.GenmediaError) as raised:
        client.generate_image(prompt="a boat")
    assert raised.value.status == 503 and len(fake.requests) == 3


def test_a_retry_after_longer_than_the_limit_is_raised_not_waited_for(sdk):
    client, fake = gateway_client(sdk, {("POST", "/generate_image"): [busy(503, "3600")]})
    with pytest.raises(sdk.GenmediaError) as raised:
        client.generate_image(prompt="a boat")
    assert raised.value.retry_after == 3600.0 and len(fake.requests) == 1


def test_retries_can_be_turned_off(sdk):
    answers = [busy(429, "0"), httpx.Response(200, json=IMAGE)]
    client, fake = gateway_client(sdk, {("POST", "/generate_image"): answers}, retries=0)
    with pytest.raises(sdk.GenmediaError) as raised:
        client.generate_image(prompt="a boat")
    assert raised.value.status == 429 and len(fake.requests) == 1


def test_an_upload_is_sent_whole_again_when_retried(sdk):
    answers = [busy(503, "0"), httpx.Response(200, json={"caption": "a red square", "model": "m"})]
    client, fake = gateway_client(sdk, {("POST", "/caption_image"): answers})
    assert client.caption_image(b"\x89PNG fake bytes").caption == "a red square"
    assert all(b"\x89PNG fake bytes" in request.content for request in fake.requests)


# Durable jobs: /jobs/...


def job_state(status: str, **fields) -> dict:
    state = {
        "id": "job_1",
        "kind": "generate_image",
        "status": status,
        "progress": 0.0,
        "queue_position": None,
        "created_at": "2026-12-01T20:00:00Z",
        "started_at": None,
        "finished_at": None,
        "result": None,
        "error": None,
        "webhook": None,
    }
    return {**state, **fields}


SUBMITTED = {
    "id": "job_1",
    "kind": "generate_image",
    "status": "queued",
    "created_at": "2026-12-01T20:00:00Z",
    "status_url": "/jobs/job_1",
    "events_url": "/jobs/job_1/events",
}


def event_stream(*events: tuple[int, dict], keep_alive: bool = True) -> httpx.Response:
    """A `text/event-stream` answer: each (id, job) as an event, with a keep-alive comment between."""
    text = "".join(
        (": ping\n\n" if keep_alive else "") + f"id: {event_id}\ndata: {json.dumps(job)}\n\n"
        for event_id, job in events
    )
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


class BreaksAfter(httpx.SyncByteStream):
    """A body that sends `data`, then fails as a dropped connection does."""

    def __init__(self, data: bytes):
        self.data = data

    def __iter__(self):
        yield self.data
        raise httpx.ReadError("connection reset")


def test_a_job_is_submitted_with_the_api_field_names_and_an_idempotency_key(sdk):
    answers = [busy(503, "0"), httpx.Response(202, json=SUBMITTED)]
    client, fake = gateway_client(sdk, {("POST", "/jobs/generate_image"): answers})
    job = client.submit_image_job(
        prompt="a kite", width=256, format="webp", webhook="https://example.com/hook", webhook_events=["started"]
    )
    assert (job.id, job.status, job.kind) == ("job_1", "queued", "generate_image")
    first, retried = fake.requests
    sent = json.loads(first.content)
    assert (
        sent.items()
        >= {
            "prompt": "a kite",
            "width": 256,
            "format": "webp",
            "webhook": "https://example.com/hook",
            "webhook_events": ["started"],
        }.items()
    )
    # A retried submit carries the same key: the gateway answers the same job, never a second one.
    assert first.headers["idempotency-key"] == retried.headers["idempotency-key"]
    assert first.headers["authorization"] == f"Bearer {KEY}"
    client.submit_image_job(prompt="a kite", idempotency_key="order-42")
    assert fake.requests[-1].headers["idempotency-key"] == "order-42"


def test_wait_follows_the_events_to_the_result(sdk):
    routes = {
        ("POST", "/jobs/generate_image"): [httpx.Response(202, json=SUBMITTED)],
        ("GET", "/jobs/job_1/events"): [
            event_stream(
                (1, job_state("queued", queue_position=2)),
                (2, job_state("running", progress=0.5)),
                (3, job_state("succeeded", progress=1.0, result=IMAGE)),
            )
        ],
    }
    client, fake = gateway_client(sdk, routes)
    job = client.submit_image_job(prompt="a kite")
    seen = [(state.status, state.progress, state.queue_position) for state in job.events()]
    assert seen == [("queued", 0.0, 2), ("running", 0.5, None), ("succeeded", 1.0, None)]
    result = job.wait()  # already finished: no further request
    assert result.file_key == IMAGE["file_key"] and result.format == "png"
    assert fake.requests[-1].headers["accept"] == "text/event-stream"
    assert len(fake.requests) == 2


def test_a_dropped_event_stream_resumes_after_the_last_event(sdk):
    broken = httpx.Response(
        200,
        stream=BreaksAfter(f"id: 7\ndata: {json.dumps(job_state('running', progress=0.25))}\n\n".encode()),
        headers={"content-type": "text/event-stream"},
    )
    routes = {
        ("GET", "/jobs/job_1"): [httpx.Response(200, json=job_state("queued"))],
        ("GET", "/jobs/job_1/events"): [broken, event_stream((8, job_state("succeeded", result=IMAGE)))],
    }
    client, fake = gateway_client(sdk, routes)
    job = client.job("job_1")
    assert job.wait(timeout_s=60).public_url == IMAGE["public_url"]
    first, resumed = [request for request in fake.requests if request.url.path.endswith("/events")]
    assert "last-event-id" not in first.headers and resumed.headers["last-event-id"] == "7"


def test_a_failed_job_raises_its_error(sdk):
    failed = job_state("failed", error={"status": 503, "message": "Image generation is unavailable"})
    routes = {
        ("POST", "/jobs/synthesize_speech"): [httpx.Response(202, json={**SUBMITTED, "kind": "synthesize_speech"})],
        ("GET", "/jobs/job_1/events"): [event_stream((1, failed))],
    }
    client, _ = gateway_client(sdk, routes)
    with pytest.raises(sdk.GenmediaError) as raised:
        client.submit_speech_job(text="Hello.").wait()
    assert (raised.value.status, raised.value.message) == (503, "Image generation is unavailable")


def test_a_job_not_finished_by_the_deadline_raises(sdk):
    routes = {("GET", "/jobs/job_1/events"): [event_stream((1, job_state("queued", queue_position=5)))]}
    client, _ = gateway_client(sdk, routes)
    with pytest.raises(sdk.GenmediaError, match="still queued") as raised:
        sdk.Job(client, SUBMITTED).wait(timeout_s=0)
    assert raised.value.status == 408


def test_cancel_answers_the_canceled_job_and_409_once_finished(sdk):
    routes = {
        ("POST", "/jobs/job_1/cancel"): [
            httpx.Response(200, json=job_state("canceled")),
            httpx.Response(409, json={"error": "job job_1 already finished (succeeded)"}),
        ]
    }
    client, _ = gateway_client(sdk, routes)
    job = sdk.Job(client, SUBMITTED)
    assert job.cancel().status == "canceled"
    with pytest.raises(sdk.GenmediaError, match="canceled"):
        job.wait()
    with pytest.raises(sdk.GenmediaError) as raised:
        job.cancel()
    assert raised.value.status == 409


def test_an_unknown_job_is_404(sdk):
    client, _ = gateway_client(sdk, {("GET", "/jobs/nope"): [httpx.Response(404, json={"error": "No job nope"})]})
    with pytest.raises(sdk.GenmediaError) as raised:
        client.job("nope")
    assert (raised.value.status, raised.value.message) == (404, "No job nope")


# Webhook verification, against a signature made as the gateway makes it (genmedia/jobs/webhooks.py).


def signed(secret: str, body: str, sent_at: datetime, webhook_id: str = "msg_1") -> dict[str, str]:
    return {
        "Webhook-Id": webhook_id,
        "Webhook-Timestamp": str(int(sent_at.timestamp())),
        "Webhook-Signature": Webhook(secret).sign(webhook_id, sent_at, body),
    }


def test_verify_webhook_accepts_the_gateways_signature_and_refuses_anything_else(sdk):
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    body = json.dumps({"type": "job.completed", "timestamp": "2026-12-01T20:00:00Z", "data": job_state("succeeded")})
    now = datetime.now(UTC)
    event = sdk.verify_webhook(body.encode(), signed(secret, body, now), secret)
    assert (event.id, event.type, event.job["status"]) == ("msg_1", "job.completed", "succeeded")
    for bad_body, headers, key in [
        (body.replace("succeeded", "failed"), signed(secret, body, now), secret),  # tampered
        (body, signed(other, body, now), secret),  # another secret
        (body, signed(secret, body, now - timedelta(minutes=10)), secret),  # replayed later
        (body, {}, secret),  # unsigned
    ]:
        with pytest.raises(sdk.WebhookVerificationError):
            sdk.verify_webhook(bad_body, headers, key)


def test_generated_functions_cover_the_job_routes(sdk):
    from genmedia_client.generated.api.jobs import cancel_job, get_job, submit_generate_image_job
    from genmedia_client.generated.models import ImageJobRequest

    routes = {
        ("POST", "/jobs/generate_image"): [httpx.Response(202, json={**job_state("queued"), **SUBMITTED})],
        ("GET", "/jobs/job_1"): [httpx.Response(200, json=job_state("succeeded", progress=1.0, result=IMAGE))],
        ("POST", "/jobs/job_1/cancel"): [httpx.Response(409, json={"error": "The job already succeeded"})],
    }
    client, fake = gateway_client(sdk, routes)
    body = ImageJobRequest(prompt="a kite", webhook="https://example.com/hook")
    submitted = submit_generate_image_job.sync(client=client.api, body=body, idempotency_key="k1")
    assert submitted.id == "job_1" and submitted.events_url == "/jobs/job_1/events"
    assert fake.requests[0].headers["idempotency-key"] == "k1"
    job = get_job.sync(client=client.api, job_id="job_1")
    assert job.status.value == "succeeded" and job.result.file_key == IMAGE["file_key"]
    assert cancel_job.sync_detailed(client=client.api, job_id="job_1").status_code == 409

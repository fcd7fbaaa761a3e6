"""The Python client SDK (`client/`): generated code that is current, and the hand-written `Genmedia` layer.

`make client` output is compared with a fresh generation here; the SDK's calls are checked against a fake
gateway (an httpx transport answering as the real one does). The SDK against a real, served gateway (the
built Bento) is in tests/test_bento.py.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tools import client_sdk

CLIENT_DIR = client_sdk.CLIENT_DIR
HAND_WRITTEN = [
    "pyproject.toml",
    "README.md",
    "generator.yaml",
    "genmedia_client/__init__.py",
    "genmedia_client/gateway.py",
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


def test_generated_retry_and_cancel_call_their_own_routes():
    retry = (CLIENT_DIR / "genmedia_client/generated/api/gateway/generate_image_async_retry.py").read_text()
    cancel = (CLIENT_DIR / "genmedia_client/generated/api/gateway/generate_image_async_cancel.py").read_text()
    assert '"method": "post"' in retry and '"url": "/generate_image_async/retry"' in retry
    assert '"method": "put"' in cancel and '"url": "/generate_image_async/cancel"' in cancel


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


def gateway_client(sdk, routes, api_key=KEY):
    fake = FakeGateway(routes)
    client = sdk.Genmedia("http://gateway.test", api_key, httpx_args={"transport": httpx.MockTransport(fake)})
    return client, fake


def test_generate_image_sends_a_flat_body_with_the_key_and_returns_the_result(sdk):
    client, fake = gateway_client(sdk, {("POST", "/generate_image"): [httpx.Response(200, json=IMAGE)]})
    result = client.generate_image(prompt="a boat", width=256, height=128, seed=7, format="png")
    assert result.public_url == IMAGE["public_url"] and result.width == 256
    [request] = fake.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    # The generated model sends the fields it has a default for (negative_prompt's is "") with the given ones.
    assert json.loads(request.content) == {
        "prompt": "a boat",
        "negative_prompt": "",
        "width": 256,
        "height": 128,
        "seed": 7,
        "format": "png",
    }


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
    client, _ = gateway_client(sdk, {("POST", "/generate_image"): [busy]})
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


def task_status(status: str) -> httpx.Response:
    return httpx.Response(
        200, json={"task_id": "t1", "status": status, "created_at": "2026-01-01T00:00:00", "executed_at": None}
    )


def test_a_job_is_submitted_then_polled_until_completed(sdk):
    routes = {
        # What /submit really answers: no created_at (BentoML's spec said it was required).
        ("POST", "/generate_image_async/submit"): [
            httpx.Response(200, json={"task_id": "t1", "status": "in_progress"})
        ],
        ("GET", "/generate_image_async/status"): [
            task_status("pending"),
            task_status("in_progress"),
            task_status("completed"),
        ],
        ("GET", "/generate_image_async/get"): [httpx.Response(200, json=IMAGE)],
    }
    client, fake = gateway_client(sdk, routes)
    job = client.submit_image_job(prompt="a kite", width=256, height=128)
    assert job.task_id == "t1"
    assert job.wait(poll_s=0).file_key == IMAGE["file_key"]
    paths = [(request.method, request.url.path) for request in fake.requests]
    assert paths.count(("GET", "/generate_image_async/status")) == 3
    assert all(request.url.params.get("task_id") == "t1" for request in fake.requests[1:])


def test_a_failed_job_raises_the_gateways_error(sdk):
    routes = {
        ("POST", "/synthesize_speech_async/submit"): [
            httpx.Response(200, json={"task_id": "t1", "status": "in_progress"})
        ],
        ("GET", "/synthesize_speech_async/status"): [task_status("failed")],
        ("GET", "/synthesize_speech_async/get"): [
            httpx.Response(503, json={"error": "Speech synthesis is unavailable"}, headers={"Retry-After": "30"})
        ],
    }
    client, _ = gateway_client(sdk, routes)
    with pytest.raises(sdk.GenmediaError) as raised:
        client.submit_speech_job(text="Hello.").wait(poll_s=0)
    assert raised.value.status == 503 and raised.value.retry_after == 30.0


def test_a_job_still_running_at_the_deadline_raises(sdk):
    routes = {
        ("POST", "/generate_image_async/submit"): [
            httpx.Response(200, json={"task_id": "t1", "status": "in_progress"})
        ],
        ("GET", "/generate_image_async/status"): [task_status("in_progress")],
    }
    client, _ = gateway_client(sdk, routes)
    with pytest.raises(sdk.GenmediaError, match="still in_progress"):
        client.submit_image_job(prompt="a kite").wait(timeout_s=0, poll_s=0)


def test_the_default_timeout_outlasts_the_gateway(sdk):
    client, _ = gateway_client(sdk, {})
    assert client.api.get_httpx_client().timeout.read == sdk.DEFAULT_TIMEOUT_S > 960


def test_generated_functions_cover_the_rest(sdk):
    from genmedia_client.generated.api.gateway import generate_image_async_cancel, generate_image_async_retry

    routes = {
        ("PUT", "/generate_image_async/cancel"): [task_status("canceled")],
        ("POST", "/generate_image_async/retry"): [httpx.Response(200, json={"task_id": "t2", "status": "in_progress"})],
    }
    client, _ = gateway_client(sdk, routes)
    assert generate_image_async_cancel.sync(client=client.api, task_id="t1").status.value == "canceled"
    assert generate_image_async_retry.sync(client=client.api, task_id="t1").task_id == "t2"

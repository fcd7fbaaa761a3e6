"""`BodyGuard`: request bodies capped, received within a deadline, spooled, and upload forms checked, before
the app (BentoML) sees them. Driven as ASGI directly: the app behind it records what reaches it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from genmedia.contract.bodies import (
    IN_MEMORY_BYTES,
    MAX_FILENAME_BYTES,
    UPLOAD_BODY_LIMIT,
    BodyGuard,
    UploadField,
    read_body,
)
from genmedia.settings import Settings

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
UPLOADS = {"/caption_image": UploadField("image"), "/caption_batch": UploadField("images", 4)}


class Recorder:
    """The app behind the guard: answers 200 with the size of the body it was given."""

    def __init__(self):
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def guarded(body_timeout_s: float = 5.0) -> tuple[BodyGuard, Recorder]:
    app = Recorder()
    return BodyGuard(app, UPLOADS, Settings(body_timeout_s=body_timeout_s)), app


def post(guard: BodyGuard, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://guard") as client:
            return await client.post(path, **kwargs)

    return asyncio.run(go())


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def test_a_valid_upload_reaches_the_app_whole():
    guard, app = guarded()
    response = post(guard, "/caption_image", files={"image": ("photo.png", PNG, "image/png")})
    assert response.status_code == 200
    [body] = app.bodies
    assert PNG in body and b'name="image"' in body


def test_a_large_body_reaches_the_app_whole_in_chunks():
    guard, app = guarded()
    data = bytes(range(256)) * 8192  # 2 MB
    response = post(guard, "/caption_image", files={"image": ("big.png", data, "image/png")})
    assert response.status_code == 200
    assert data in app.bodies[0]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("file", "file: not a field of this route; send the image as the multipart file field 'image'"),
        ("Image", "Image: not a field of this route"),
        ("image[]", "image[]: not a field of this route"),
    ],
)
def test_a_file_under_another_field_name_is_refused(field, message):
    guard, app = guarded()
    response = post(guard, "/caption_image", files={field: ("photo.png", PNG, "image/png")})
    assert response.status_code == 400 and message in error_of(response)
    assert not app.bodies


def test_an_upload_with_no_file_is_refused():
    guard, _ = guarded()
    response = post(
        guard,
        "/caption_image",
        content=b"--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400 and error_of(response).startswith("image: missing")


@pytest.mark.parametrize("length", [MAX_FILENAME_BYTES + 1, 245, 300])
def test_a_file_name_too_long_for_a_temporary_file_is_refused(length):
    guard, app = guarded()
    response = post(guard, "/caption_image", files={"image": ("x" * (length - 4) + ".png", PNG, "image/png")})
    assert response.status_code == 400
    expected = f"image: the file name is over {MAX_FILENAME_BYTES} bytes; send it under a shorter one."
    assert error_of(response) == expected
    assert not app.bodies


def test_a_file_name_of_the_longest_accepted_length_passes():
    guard, app = guarded()
    name = "é" * ((MAX_FILENAME_BYTES - 4) // 2) + ".png"
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    assert post(guard, "/caption_image", files={"image": (name, PNG, "image/png")}).status_code == 200


def test_a_file_name_with_control_characters_is_refused():
    guard, _ = guarded()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a\x01b.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--b--\r\n"
    )
    response = post(guard, "/caption_image", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400 and "control characters" in error_of(response)


def test_more_files_than_a_route_takes_are_refused():
    guard, app = guarded()
    files = [("images", (f"{n}.png", PNG, "image/png")) for n in range(5)]
    response = post(guard, "/caption_batch", files=files)
    assert response.status_code == 400
    assert error_of(response) == "images: 5 files sent; at most 4 are taken."
    assert post(guard, "/caption_batch", files=files[:4]).status_code == 200
    assert len(app.bodies) == 1


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (json.dumps({"image": "http://203.0.113.10/x.png"}).encode(), "application/json"),
        (b"image=http%3A%2F%2F203.0.113.10%2Fx.png", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nhttp://203.0.113.10/x.png\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
    ids=["json", "form field", "text part"],
)
def test_text_for_a_file_field_is_refused(content, content_type):
    guard, app = guarded()
    response = post(guard, "/caption_image", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 400 and error_of(response).startswith("image: send ")
    assert not app.bodies


def test_json_routes_take_json_and_their_cap_is_64_kb():
    guard, app = guarded()
    assert post(guard, "/generate_image", json={"prompt": "x"}).status_code == 200
    response = post(guard, "/generate_image", json={"prompt": "x" * 70_000})
    assert response.status_code == 413 and error_of(response) == "Request body is over 65536 bytes."
    assert app.bodies == [b'{"prompt":"x"}']


def test_an_upload_over_the_cap_is_refused_declared_or_not():
    guard, _ = guarded()
    data = b"\0" * (UPLOAD_BODY_LIMIT + 1)
    declared = post(guard, "/caption_image", content=data)
    assert declared.status_code == 413 and error_of(declared) == "image: the upload is over the 10 MB limit."

    async def chunks():  # no Content-Length: sent chunked
        for offset in range(0, len(data), 65536):
            yield data[offset : offset + 65536]

    assert post(guard, "/caption_image", content=chunks()).status_code == 413


def test_a_body_not_received_within_the_deadline_gets_408_and_the_connection_closed():
    guard, app = guarded(body_timeout_s=0.2)
    sent = []
    stalled = asyncio.Event()  # never set: the sender sends one chunk and stalls

    async def receive():
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": b"--b\r\n", "more_body": True}
        await stalled.wait()

    answers = []

    async def send(message):
        answers.append(message)

    scope = {"type": "http", "method": "POST", "path": "/caption_image", "headers": [], "query_string": b""}
    asyncio.run(guard(scope, receive, send))
    start, body = answers
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"]) == {"error": "body: not received within 0.2 s; send it faster, or smaller."}
    assert not app.bodies


def test_bodies_past_64_kb_are_kept_on_disk_not_in_memory():
    def receive_of(data: bytes):
        async def receive():
            return {"type": "http.request", "body": data, "more_body": False}

        return receive

    small = asyncio.run(read_body(receive_of(b"x" * IN_MEMORY_BYTES), UPLOAD_BODY_LIMIT, 5))
    large = asyncio.run(read_body(receive_of(b"x" * (IN_MEMORY_BYTES + 1)), UPLOAD_BODY_LIMIT, 5))
    # SpooledTemporaryFile moves to a real temporary file ("rolls over") past its max_size.
    assert not small.file._rolled and large.file._rolled
    assert b"".join(large.chunks()) == b"x" * (IN_MEMORY_BYTES + 1)
    small.close()
    large.close()


def test_bentomls_own_calls_between_services_pass_to_bentoml():
    # An upload sent by the gateway to a model service of the same `bentoml serve` is its file's path, pickled;
    # BentoML refuses this media type (415) in the service the outside reaches.
    guard, app = guarded()
    response = post(
        guard, "/caption_image", content=b"\x80\x04pickled", headers={"Content-Type": "application/vnd.bentoml+pickle"}
    )
    assert response.status_code == 200 and app.bodies == [b"\x80\x04pickled"]

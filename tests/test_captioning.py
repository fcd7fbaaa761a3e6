"""The captioning service, served for real (`bentoml serve services.image_captioning:ImageCaptioning`, tiny BLIP).

One server for the whole file. Its PyTorch runs one thread: the tiny model is all per-call overhead, and
two threads spinning on cores the test client shares are slower than one.
"""

from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from testbed.serving import Server, base_env
from tests.test_uploads import png_header

BATCH_METRIC = "genmedia_caption_batch_size_count"


@pytest.fixture(scope="module")
def captioner(tiny_store, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("captioning") / "serve.log"
    server = Server("services.image_captioning:ImageCaptioning", base_env(tiny_store, OMP_NUM_THREADS="1"), log_path)
    server.start()
    yield server
    server.stop()


def noise(seed: int, width: int = 96, height: int = 72) -> Image.Image:
    """An image no other seed gives."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def post(server: Server, data: bytes, filename: str = "upload.png", content_type: str = "image/png") -> httpx.Response:
    return httpx.post(f"{server.url}/caption_image", files={"image": (filename, data, content_type)}, timeout=120)


def caption_of(server: Server, data: bytes) -> str:
    response = post(server, data)
    assert response.status_code == 200, response.text
    return response.json()["caption"]


@pytest.mark.parametrize(
    ("format", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_png_jpeg_and_webp_uploads_get_a_caption(captioner, format, content_type):
    data = encoded(noise(1), format)
    response = post(captioner, data, f"upload.{format.lower()}", content_type)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["caption"], str) and body["caption"].strip()
    assert body["model"].startswith("image-captioning:")


def test_the_same_image_gets_the_same_caption(captioner):
    data = encoded(noise(2), "PNG")
    assert caption_of(captioner, data) == caption_of(captioner, data)


def test_concurrent_requests_are_batched_and_captioned_as_if_alone(captioner):
    uploads = [encoded(noise(100 + index, 80 + index, 60), "PNG") for index in range(16)]
    # Alone first: these also finish the dispatcher's calibration, which runs its first passes one by one.
    alone = [caption_of(captioner, data) for data in uploads]
    # Different images get different captions, so a caption handed to the wrong request would show.
    assert len(set(alone)) >= len(uploads) // 2, alone
    passes_before = captioner.metric(BATCH_METRIC)
    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        responses = list(pool.map(lambda data: post(captioner, data), uploads))
    passes = captioner.metric(BATCH_METRIC) - passes_before
    assert [response.status_code for response in responses] == [200] * len(uploads), [r.text for r in responses]
    assert [response.json()["caption"] for response in responses] == alone
    assert passes < len(uploads), f"{len(uploads)} concurrent captions took {passes:.0f} forward passes"


def truncated_png() -> bytes:
    data = encoded(noise(3, 256, 256), "PNG")
    return data[: len(data) // 2]


BAD_UPLOADS = {
    "text file": (b"just some notes, not an image\n" * 40, "notes.txt", "text/plain", 400, "not a PNG, JPEG or WebP"),
    "truncated png": (truncated_png(), "cut.png", "image/png", 400, "truncated or corrupt"),
    "11 MB file": (b"\0" * (11 * 1024 * 1024), "big.png", "image/png", 413, "over the 10 MB limit"),
    "huge canvas": (png_header(20000, 20000), "bomb.png", "image/png", 413, "megapixels"),
    "48-megapixel canvas": (png_header(8000, 6000), "bomb.png", "image/png", 413, "over the 40-megapixel limit"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_bad_uploads_are_refused_with_a_json_error(captioner, case):
    data, filename, content_type, status, message = BAD_UPLOADS[case]
    response = post(captioner, data, filename, content_type)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"].startswith("image: ") and message in body["error"]


def test_the_service_keeps_serving_after_refusals(captioner):
    for data, filename, content_type, status, _ in BAD_UPLOADS.values():
        assert post(captioner, data, filename, content_type).status_code == status
    assert caption_of(captioner, encoded(noise(4), "JPEG"))
    assert "Traceback" not in captioner.log_text()

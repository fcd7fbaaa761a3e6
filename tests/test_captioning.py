"""The captioning service, served for real (`bentoml serve services.image_captioning:ImageCaptioning`, tiny BLIP).

One server for the whole file. Its PyTorch runs one thread: the tiny model is all per-call overhead, and
two threads spinning on cores the test client shares are slower than one.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from PIL import Image

from testbed.serving import Server, base_env, run_python
from tests.test_uploads import png_header, scan_bomb

BATCH_METRIC = "genmedia_caption_batch_size_count"  # every pass
DISPATCHED_METRIC = "bentoml_service_adaptive_batch_size_count"  # the passes BentoML's dispatcher started


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
    alone = [caption_of(captioner, data) for data in uploads]
    # Different images get different captions, so a caption handed to the wrong request would show.
    assert len(set(alone)) >= len(uploads) // 2, alone
    passes_before, dispatched_before = captioner.metric(BATCH_METRIC), captioner.metric(DISPATCHED_METRIC)
    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        responses = list(pool.map(lambda data: post(captioner, data), uploads))
    passes = captioner.metric(BATCH_METRIC) - passes_before
    assert captioner.metric(DISPATCHED_METRIC) > dispatched_before  # what waited went through the dispatcher
    assert [response.status_code for response in responses] == [200] * len(uploads), [r.text for r in responses]
    assert [response.json()["caption"] for response in responses] == alone
    assert passes < len(uploads), f"{len(uploads)} concurrent captions took {passes:.0f} forward passes"


def test_a_lone_client_s_captions_start_at_once_not_through_the_dispatcher(captioner):
    """With none other in flight a caption has nothing to batch with; the dispatcher's calibration would
    hold two of a lone client's first dozen captions for seconds, waiting for a partner."""
    passes_before, dispatched_before = captioner.metric(BATCH_METRIC), captioner.metric(DISPATCHED_METRIC)
    for seed in range(3):
        caption_of(captioner, encoded(noise(200 + seed), "PNG"))
    assert captioner.metric(BATCH_METRIC) - passes_before == 3
    assert captioner.metric(DISPATCHED_METRIC) == dispatched_before


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


# Served alone: the same bounds as behind the gateway.


def worker_cpu_s(server: Server) -> float:
    """CPU seconds used so far by the server and all its worker processes."""
    processes = [psutil.Process(server.process.pid)]
    processes += processes[0].children(recursive=True)
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def test_a_scan_bomb_jpeg_is_refused_in_under_a_second_of_cpu(captioner):
    before = worker_cpu_s(captioner)
    response = post(captioner, scan_bomb(), "bomb.jpg", "image/jpeg")
    cpu_s = worker_cpu_s(captioner) - before
    assert response.status_code == 400 and "progressive scans" in response.json()["error"], response.text
    assert cpu_s < 1.0, f"the refusal cost {cpu_s:.2f} CPU-s"


def test_the_worker_keeps_to_the_one_malloc_arena_the_service_sets(captioner):
    # bentoml serve's CLI process does not have it: only the service's envs can give it to the worker.
    cli = psutil.Process(captioner.process.pid)
    assert "MALLOC_ARENA_MAX" not in cli.environ()
    workers = [child for child in cli.children(recursive=True) if "_bentoml_impl.worker" in " ".join(child.cmdline())]
    assert workers, [child.cmdline() for child in cli.children(recursive=True)]
    assert [worker.environ().get("MALLOC_ARENA_MAX") for worker in workers] == ["1"] * len(workers)


@pytest.mark.parametrize("field", ["file", "Image", "image[]"])
def test_a_file_under_another_field_name_gets_400(captioner, field):
    data = encoded(noise(5), "PNG")
    response = httpx.post(f"{captioner.url}/caption_image", files={field: ("a.png", data, "image/png")}, timeout=60)
    assert response.status_code == 400 and response.json()["error"].startswith(f"{field}: "), response.text


def test_a_file_name_of_245_bytes_gets_400(captioner):
    response = post(captioner, encoded(noise(6), "PNG"), "x" * 241 + ".png")
    assert response.status_code == 400 and "file name" in response.json()["error"], response.text


def test_a_declared_200_mb_body_is_refused_before_it_is_sent(captioner):
    host, port = captioner.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        head = (
            f"POST /caption_image HTTP/1.1\r\nHost: {host}\r\nContent-Length: {200 * 2**20}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        )
        connection.sendall(head.encode() + b"--b\r\n")
        answer = http_answer(connection)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"image: the upload is over the 10 MB limit." in answer


def http_answer(connection: socket.socket) -> bytes:
    """One HTTP answer read from `connection`: its head, then as many body bytes as its Content-Length says."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := connection.recv(65536)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.partition(b":")[2]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length and (chunk := connection.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def batch(server: Server, files: list, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/caption_batch", files=files, timeout=120, **kwargs)


def test_caption_batch_captions_model_inputs(captioner):
    files = [("images", (f"{n}.png", encoded(noise(10 + n, 64, 64), "PNG"), "image/png")) for n in range(2)]
    response = batch(captioner, files)
    assert response.status_code == 200, response.text
    captions = response.json()
    assert len(captions) == 2 and all(isinstance(caption, str) for caption in captions)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("images", (f"{n}.png", encoded(noise(20 + n, 32, 32), "PNG"), "image/png")) for n in range(5)], "at most 4"),
        ([("images", ("a.jpg", encoded(noise(30), "JPEG"), "image/jpeg"))], "not a PNG image"),
        ([("images", ("big.png", encoded(noise(31, 1500, 1000), "PNG"), "image/png"))], "pixel limit"),
        ([("images", ("a.txt", b"not an image at all", "text/plain"))], "not a readable PNG image"),
    ],
    ids=["five images", "a jpeg", "a photo-sized png", "a text file"],
)
def test_caption_batch_takes_at_most_four_model_inputs(captioner, files, message):
    response = batch(captioner, files)
    assert response.status_code == 400 and message in response.json()["error"], response.text


@pytest.mark.parametrize(
    ("route", "body", "content_type"),
    [
        ("/caption_batch", b'{"images": ["http://203.0.113.10/x.png"]}', "application/json"),
        ("/caption_batch", b"images=http%3A%2F%2F203.0.113.10%2Fx.png", "application/x-www-form-urlencoded"),
        ("/caption_image", b"image=http%3A%2F%2F203.0.113.10%2Fx.png", "application/x-www-form-urlencoded"),
    ],
    ids=["batch json", "batch form", "image form"],
)
def test_text_for_a_file_input_is_refused_not_fetched(captioner, route, body, content_type):
    response = httpx.post(f"{captioner.url}{route}", content=body, headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(("image", "images")), response.text


def test_pickled_calls_are_refused_when_served_alone(captioner):
    # How services of one deployment call each other; never from outside (BentoML's own 415).
    response = httpx.post(
        f"{captioner.url}/caption_image",
        content=b"\x80\x04\x95\x00",
        headers={"Content-Type": "application/vnd.bentoml+pickle"},
        timeout=60,
    )
    assert response.status_code == 415, response.text


# Run in a process of its own, as `bentoml serve` would: the warm-up in `__init__`, then a batch from the
# event loop; each `describe` call records the thread it ran on.
ONE_THREAD_SCRIPT = """
import asyncio, json, threading
from PIL import Image
import services.image_captioning as captioning

threads = []
describe = captioning.ImageCaptioning.inner.describe
def recorded(self, images):
    threads.append(threading.current_thread().name)
    return describe(self, images)
captioning.ImageCaptioning.inner.describe = recorded
service = captioning.ImageCaptioning.inner()
for _ in range(2):
    asyncio.run(service.caption_batch([Image.new("RGB", (384, 384), "red")]))
print(json.dumps(threads))
"""


def test_the_warm_up_and_every_caption_run_on_the_one_caption_thread(tiny_store):
    """One thread computes, so the process keeps one OpenMP team (two would share the same two cores)."""
    result = run_python(tiny_store, "-c", ONE_THREAD_SCRIPT, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    threads = json.loads(result.stdout.splitlines()[-1])
    assert threads == ["caption_0"] * 3, threads

"""The text-to-image service alone (`bentoml serve services.text_to_image:TextToImage`), tiny model,
storing into the Supabase Storage test server through the real client."""

from __future__ import annotations

import hashlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image, ImageChops

from testbed.serving import Server, base_env, run_python
from testbed.storage_server import FakeSupabaseStorage

BUCKET = "images-test"
GENERATED = ("genmedia_outputs_generated_total", {"capability": "text-to-image"})


@pytest.fixture(scope="module")
def storage():
    with FakeSupabaseStorage() as fake:
        yield fake


@pytest.fixture(scope="module")
def image_service(tiny_store, storage, tmp_path_factory):
    work = tmp_path_factory.mktemp("image-service")
    env = base_env(
        tiny_store,
        STORAGE_BACKEND="supabase",
        SUPABASE_URL=storage.url,
        SUPABASE_SERVICE_ROLE_KEY=storage.service_key,
        SUPABASE_BUCKET=BUCKET,
        SPOOL_DIR=str(work / "spool"),
        STORAGE_TIMEOUT_S="1",
        STORAGE_RETRY_BUDGET_S="2",
    )
    server = Server("services.text_to_image:TextToImage", env, work / "server.log").start()
    yield server
    server.stop()


def generate(service: Server, **request) -> httpx.Response:
    return httpx.post(f"{service.url}/generate_image", json={"prompt": "a red fox", **request}, timeout=120)


def fetch_image(url: str) -> tuple[Image.Image, str]:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content)), response.headers["content-type"]


@pytest.mark.parametrize(
    ("request_fields", "size", "pil_format", "content_type"),
    [
        ({"width": 128, "height": 96, "seed": 1}, (128, 96), "PNG", "image/png"),
        ({"width": 64, "height": 128, "seed": 2, "format": "webp"}, (64, 128), "WEBP", "image/webp"),
        ({"width": 96, "height": 64, "seed": 3, "format": "jpeg"}, (96, 64), "JPEG", "image/jpeg"),
        ({"seed": 4}, (512, 512), "PNG", "image/png"),
    ],
)
def test_stored_image_decodes_in_requested_format_and_size(
    image_service, request_fields, size, pil_format, content_type
):
    response = generate(image_service, **request_fields)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["width"], result["height"]) == size
    assert result["file_key"].startswith("images/") and result["file_key"].endswith(
        "." + request_fields.get("format", "png")
    )
    assert result["model"].startswith("text-to-image:")
    image, served_type = fetch_image(result["public_url"])
    assert image.format == pil_format
    assert image.size == size
    assert served_type == content_type
    image.load()


def test_seed_is_drawn_when_absent_and_returned(image_service):
    first, second = (generate(image_service, width=64, height=64).json() for _ in range(2))
    assert 0 <= first["seed"] < 2**32
    assert first["seed"] != second["seed"]
    assert first["file_key"] != second["file_key"]


def test_same_seed_is_answered_from_storage_without_generating(image_service):
    generated_before = image_service.metric(GENERATED[0], **GENERATED[1])
    first = generate(image_service, width=64, height=64, seed=42)
    assert first.status_code == 200 and first.json()["cached"] is False
    assert image_service.metric(GENERATED[0], **GENERATED[1]) == generated_before + 1
    generated_before += 1
    second = generate(image_service, width=64, height=64, seed=42)
    assert second.status_code == 200
    assert second.json()["cached"] is True
    assert second.json()["file_key"] == first.json()["file_key"]
    assert image_service.metric(GENERATED[0], **GENERATED[1]) == generated_before
    assert image_service.metric("genmedia_cache_hits_total", capability="text-to-image", where="service") >= 1


def test_different_seeds_give_different_keys_and_pixels(image_service):
    one, two = (generate(image_service, width=64, height=64, seed=seed).json() for seed in (100, 101))
    assert one["file_key"] != two["file_key"]
    image_one, _ = fetch_image(one["public_url"])
    image_two, _ = fetch_image(two["public_url"])
    assert ImageChops.difference(image_one.convert("RGB"), image_two.convert("RGB")).getbbox() is not None


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": "x" * 60_000}, "prompt"),  # long, but under the 64 KB body cap (past it: 413)
        ({"prompt": 12}, "prompt"),
        ({"negative_prompt": "x" * 1001}, "negative_prompt"),
        ({"width": 100}, "width"),
        ({"width": 56}, "width"),
        ({"height": 1544}, "height"),
        ({"width": "wide"}, "width"),
        ({"steps": 0}, "steps"),
        ({"steps": 101}, "steps"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"guidance_scale": 20.5}, "guidance_scale"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"format": "gif"}, "format"),
    ],
)
def test_invalid_input_is_refused_naming_the_field(image_service, request_fields, field):
    response = generate(image_service, **request_fields)
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith(f"{field}:"), message


def test_storage_outage_gives_503_and_the_spooled_image_is_uploaded_without_regenerating(image_service, storage):
    request = {"width": 64, "height": 64, "seed": 7}
    storage.set_down(True)
    try:
        generated_before = image_service.metric(GENERATED[0], **GENERATED[1])
        failed = generate(image_service, **request)
        assert failed.status_code == 503
        assert int(failed.headers["Retry-After"]) > 0
        assert "Supabase Storage" in failed.json()["error"]
        assert storage.service_key not in failed.text
        assert image_service.metric(GENERATED[0], **GENERATED[1]) == generated_before + 1
    finally:
        storage.set_down(False)
    recovered = generate(image_service, **request)
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["cached"] is True
    assert image_service.metric(GENERATED[0], **GENERATED[1]) == generated_before + 1
    image, _ = fetch_image(recovered.json()["public_url"])
    assert image.size == (64, 64)


def test_concurrent_requests_do_not_interfere(image_service, storage):
    seeds = list(range(500, 508))
    alone = {}
    for seed in seeds:
        result = generate(image_service, width=64, height=64, seed=seed).json()
        alone[seed] = httpx.get(result["public_url"], timeout=30).content
        # Forget the stored copy so the concurrent run really generates again.
        del storage.objects[(BUCKET, result["file_key"])]

    with ThreadPoolExecutor(max_workers=len(seeds)) as pool:
        responses = list(pool.map(lambda seed: generate(image_service, width=64, height=64, seed=seed), seeds))
    for seed, response in zip(seeds, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["cached"] is False
        together = httpx.get(response.json()["public_url"], timeout=30).content
        assert together == alone[seed], f"seed {seed} differs when generated concurrently"


# One image is an unbatched pipeline call (one generator), byte for byte; several are one batched call.

UNBATCHED = """
import hashlib, sys, torch
from genmedia.contract.requests import ImageRequest
from genmedia.model_loading import TEXT_TO_IMAGE, load_text_to_image, pick_device, stored_model
from services.text_to_image import encode_image

model = stored_model(TEXT_TO_IMAGE)
request = ImageRequest(prompt="a red fox", width=64, height=64, seed=int(sys.argv[1])).resolved(model.info.metadata)
device, dtype = pick_device()
pipeline = load_text_to_image(model.path, device, dtype)
generator = torch.Generator(device=device).manual_seed(request.seed)
image = pipeline(**request.pipeline_arguments(), generator=generator).images[0]
print(hashlib.sha256(encode_image(image, "png")).hexdigest())
"""


def test_a_single_image_is_byte_for_byte_an_unbatched_pipeline_call(image_service, tiny_store):
    answer = generate(image_service, width=64, height=64, seed=41).json()
    served = httpx.get(answer["public_url"], timeout=30).content
    unbatched = run_python(tiny_store, "-c", UNBATCHED, "41")
    assert unbatched.returncode == 0, unbatched.stderr[-2000:]
    assert hashlib.sha256(served).hexdigest() == unbatched.stdout.strip()


def test_generate_images_makes_count_images_in_one_pipeline_call(image_service):
    generated = image_service.metric(GENERATED[0], **GENERATED[1])
    calls = image_service.metric("genmedia_generation_seconds_count", capability="text-to-image")
    response = httpx.post(
        f"{image_service.url}/generate_images",
        json={"request": {"prompt": "a red fox", "width": 64, "height": 64, "seed": 900}, "count": 3},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    results = response.json()
    assert [result["seed"] for result in results] == [900, 901, 902]
    assert len({result["file_key"] for result in results}) == 3
    assert image_service.metric(GENERATED[0], **GENERATED[1]) - generated == 3
    assert image_service.metric("genmedia_generation_seconds_count", capability="text-to-image") - calls == 1
    # Each image is stored alone: image 1 on its own is a cache hit.
    alone = generate(image_service, width=64, height=64, seed=901).json()
    assert (alone["cached"], alone["file_key"]) == (True, results[1]["file_key"])


def progress_lines(service: Server, request: dict, stop_after: int | None = None) -> list[dict]:
    """The lines of `/generate_image_progress`; with `stop_after`, the caller goes away after that many."""
    lines = []
    with httpx.stream("POST", f"{service.url}/generate_image_progress", json=request, timeout=300) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line:
                lines.append(json.loads(line))
            if stop_after is not None and len(lines) == stop_after:
                break
    return lines


def test_the_progress_stream_reports_each_step_then_the_sync_routes_answer(image_service):
    request = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3, "seed": 11}

    lines = progress_lines(image_service, request)

    assert lines[:3] == [{"step": n, "steps": 3} for n in (1, 2, 3)]
    assert lines[3]["result"] == {**generate(image_service, **request).json(), "cached": False}
    assert len(lines) == 4


def test_a_progress_stream_whose_caller_goes_away_stops_and_stores_nothing(image_service, storage):
    generated = image_service.metric("genmedia_outputs_generated_total")
    stopped = image_service.metric("genmedia_generations_stopped_total")
    request = {"prompt": "a red fox", "width": 256, "height": 256, "steps": 100, "seed": 12}

    assert progress_lines(image_service, request, stop_after=2) == [{"step": n, "steps": 100} for n in (1, 2)]

    deadline = time.monotonic() + 300
    while image_service.metric("genmedia_generations_stopped_total") == stopped:
        assert time.monotonic() < deadline, "the generation went on after its caller left"
        time.sleep(0.2)
    assert image_service.metric("genmedia_outputs_generated_total") == generated
    assert generate(image_service, **request).json()["cached"] is False, "the stopped image was not stored"


# In a process of its own, as `bentoml serve` would run it: when the first request's last denoising step
# ends, another task takes the denoise thread (as a queued request's denoising would) and holds it until
# the first request has answered or a minute has passed.
ANSWERED_WHILE_QUEUED = """
import asyncio, json, threading
from genmedia.contract.requests import ImageRequest
from services.text_to_image import TextToImage

service = TextToImage.inner()
request = ImageRequest(prompt="a red fox", width=64, height=64, steps=2, seed=7)
held = threading.Event()
release = threading.Event()

def hold_the_thread(step):
    if step == 2 and not held.is_set():
        held.set()
        service.denoiser.submit(release.wait, 60)

async def main():
    work = asyncio.ensure_future(service.make_images(request, 1, hold_the_thread))
    done, _ = await asyncio.wait({work}, timeout=60)
    release.set()
    print(json.dumps({"answered_while_held": bool(done), "stored": [r.file_key for r in await work]}))

asyncio.run(main())
"""


def test_an_image_is_checked_and_answered_without_waiting_for_requests_queued_behind_it(tiny_store, tmp_path):
    """Its safety check runs in the same task as its denoising, not as a task queued behind later ones."""
    result = run_python(
        tiny_store,
        "-c",
        ANSWERED_WHILE_QUEUED,
        SAFETY_CHECKER="on",
        LOCAL_STORAGE_DIR=str(tmp_path / "files"),
        SPOOL_DIR=str(tmp_path / "spool"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["answered_while_held"], answer
    [key] = answer["stored"]
    assert (tmp_path / "files" / key).is_file()


# In a process of its own, like the test above: a task queued on the denoise thread ahead of the request
# moves a fake clock of the image service's on by HELD_S once the request waits behind it.
QUEUE_WAIT_NOT_MODEL_TIME = """
import asyncio, json, threading, time, types
from concurrent.futures import ThreadPoolExecutor
import prometheus_client
import services.text_to_image as image_service
from genmedia.contract.requests import ImageRequest

HELD_S = 1000.0
clock = types.SimpleNamespace(offset=0.0)
image_service.time = types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock.offset)
queued = threading.Event()

class WatchedDenoiser(ThreadPoolExecutor):
    def submit(self, function, *args, **kwargs):
        future = super().submit(function, *args, **kwargs)
        if getattr(function, "__name__", "") == "denoise_and_check":
            queued.set()
        return future

service = image_service.TextToImage.inner()
service.denoiser = WatchedDenoiser(max_workers=1, thread_name_prefix="denoise")

def ahead_of_the_request():
    queued.wait(60)
    clock.offset += HELD_S

service.denoiser.submit(ahead_of_the_request)
asyncio.run(service.make_images(ImageRequest(prompt="a red fox", width=64, height=64, steps=1, seed=5), 1))
labels = {"capability": "text-to-image"}
print(json.dumps({
    "queued": queued.is_set(),
    "calls": prometheus_client.REGISTRY.get_sample_value("genmedia_generation_seconds_count", labels),
    "seconds": prometheus_client.REGISTRY.get_sample_value("genmedia_generation_seconds_sum", labels),
}))
"""


def test_the_model_time_of_a_call_leaves_out_its_wait_in_the_denoise_queue(tiny_store, tmp_path):
    """`genmedia_generation_seconds` is timed on the denoise thread, not around the wait for it."""
    result = run_python(
        tiny_store,
        "-c",
        QUEUE_WAIT_NOT_MODEL_TIME,
        LOCAL_STORAGE_DIR=str(tmp_path / "files"),
        SPOOL_DIR=str(tmp_path / "spool"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["queued"] and answer["calls"] == 1, answer
    assert answer["seconds"] < 1000, f"the 1000 s the request waited in the queue were timed: {answer}"

"""Image captioning: BLIP (or ViT-GPT2) on two CPU cores, with adaptive batching.

A captioner is small enough to run on CPUs, so this service never asks for a GPU: it loads on the CPU in
float32 even where CUDA is visible, and pins PyTorch to the cores it reserves. The weights come from the
model store. Captions are computed on one thread of their own (`self.describer`), warm-up included, so the
process keeps one OpenMP thread team; the warm-up caption runs before the service reports ready, as the
first `generate` call of a process pays about a second of one-off setup. Freed memory is kept for the
next caption (`genmedia.cpu_allocator`).

A request goes through two steps:
1. `caption_image` checks and decodes the upload (`genmedia.contract.uploads`: the gateway checks only its
   headers, this is the one full decode), a JPEG at about the model's input size, and shrinks it to that
   size, on the decode threads (`DECODES`), so big photos decode in parallel, in bounded numbers, and never
   hold up the model;
2. with no other caption in flight, the pass starts at once; otherwise it calls `caption_batch` through
   the service's own client (`self.to_async`), and BentoML's dispatcher merges the images of concurrent
   requests into one `generate` call (up to CAPTION_MAX_BATCH_SIZE). Captions are decoded
   deterministically (greedy, no sampling), so an image gets the same caption alone or in a batch;
   `genmedia.cpu_captioning` runs stock `generate` with the linears on oneDNN and the image's
   cross-attention keys and values computed once per caption instead of once per token.
"""

import asyncio
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import BentoMLException
from PIL import Image
from pydantic import WrapValidator

from genmedia import logger
from genmedia.contract.bodies import BodyGuard, UploadField
from genmedia.contract.errors import CAPTION_BUSY_RETRY_AFTER_S, ErrorBodyMiddleware, Unavailable, answers_errors
from genmedia.contract.requests import CaptionResult
from genmedia.contract.uploads import DECODES, read_upload_image
from genmedia.cpu_allocator import keep_freed_memory
from genmedia.metrics import metrics
from genmedia.model_loading import IMAGE_CAPTIONING, load_image_captioner
from genmedia.settings import get_settings
from services import ONE_LASTING_CONNECTION, ONE_MALLOC_ARENA

CPUS = 2
# Greedy decoding: deterministic, and on a CPU beam search would cost as many decoder passes as beams. A
# caption is one sentence; 30 tokens leave room for a long one.
NUM_BEAMS = 1
MAX_NEW_TOKENS = 30
# The most images one `generate` call takes (CAPTION_MAX_BATCH_SIZE, default 4; 1 serves without batching).
# With the image's keys and values projected once per caption (`genmedia.caption_decoding`), what is left of
# a token's work is streaming the decoder's weights from memory, shared by every image of a batch: on 2 CPU
# cores, 4 BLIP-base-sized captions took 25 CPU-seconds as one batch of 4 against 35 one by one. Small
# models (`tiny`, ViT-GPT2) are all per-call overhead, so there a batch of n is nearly n times the throughput.
MAX_BATCH_SIZE = get_settings().caption_max_batch_size
# The dispatcher answers 503 when a request's wait plus its predicted pass would exceed this: a pass of 4
# on BLIP-large running ahead of it and then its own (2 × 45 s, before the projections were cached), so a
# burst queues instead of failing.
MAX_LATENCY_MS = 90_000


# What `caption_batch` takes from outside: PNGs the size of a model input (`batch_input` sends PNGs of the
# processor's size, 384² for BLIP), not photos, so a batch of MAX_BATCH_SIZE stays a few megabytes decoded.
BATCH_IMAGE_FORMAT = "PNG"
MAX_BATCH_IMAGE_PIXELS = 1024 * 1024


def within_upload_rules(value, decode) -> Image.Image:
    """`caption_batch` is a route too: what reaches it from outside is a model input, or gets a 400.

    BentoML opens each image lazily, so only its header has been read when this runs.
    """
    limit = f"the {MAX_BATCH_IMAGE_PIXELS:,}-pixel limit of a model input"
    try:
        image = decode(value)
    except Image.DecompressionBombError:
        raise ValueError(f"over {limit}") from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError("not a readable PNG image") from None
    if not isinstance(image, Image.Image):
        raise ValueError("send a PNG file part (text and URLs are not fetched)")
    if image.format != BATCH_IMAGE_FORMAT:
        raise ValueError("not a PNG image (caption_batch takes model inputs; send photos to /caption_image)")
    if image.width * image.height > MAX_BATCH_IMAGE_PIXELS:
        raise ValueError(f"{image.width}×{image.height} pixels is over {limit}")
    return image


BatchImage = Annotated[Image.Image, WrapValidator(within_upload_rules)]


@bentoml.service(
    resources={"cpu": str(CPUS)},
    # The timeout covers MAX_LATENCY_MS; each caption holds two slots, its own request and its `caption_batch`.
    traffic={"timeout": 120, "concurrency": 8, "max_concurrency": 64},
    runner_connection=ONE_LASTING_CONNECTION,
    envs=ONE_MALLOC_ARENA,
)
class ImageCaptioning:
    model = bentoml.models.BentoModel(f"{IMAGE_CAPTIONING}:latest")

    def __init__(self) -> None:
        import torch

        # Imported here, as torch is: the gateway imports this module and starts without torch.
        from genmedia.cpu_captioning import cpu_caption_decoder

        started = time.perf_counter()
        # One thread per reserved core: PyTorch would otherwise start one per host core and oversubscribe.
        # OMP_NUM_THREADS overrides it, for machines where other processes share these cores.
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(CPUS)
        self.captioner = load_image_captioner(self.model.path, "cpu", torch.float32)
        self.version = str(self.model.tag)
        self.input_size, self.resample = model_input_size(self.captioner.processor)
        # Every `generate` call on this one thread: a call from another thread (BentoML runs a sync API on
        # a pool whose threads come and go) would start another OpenMP team on the same two cores.
        self.describer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption")
        # The weights are packed on the thread that runs the captions: packed on the main thread, a
        # BLIP-base caption on this one took 1.61 s against 1.35 s (one process, 2 cores, measured).
        self.decoder = self.describer.submit(cpu_caption_decoder, self.captioner.model).result()
        # Only now, so that the weights packing replaced went back to the system rather than into the heap.
        keep_freed_memory()
        self.describer.submit(self.describe, [Image.new("RGB", (64, 64), "gray")]).result()
        self.captions_in_flight = 0  # uploads decoded and waiting for, or in, a pass
        logger.info(
            "image-captioning %s (source %s, %s) ready on cpu in %.1f s",
            self.version,
            self.model.info.labels.get("source"),
            self.captioner.architecture,
            time.perf_counter() - started,
        )

    def describe(self, images: list[Image.Image]) -> list[str]:
        """One forward pass: a caption for each image."""
        import torch

        pixel_values = self.captioner.processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            ids = self.decoder.generate(
                pixel_values, num_beams=NUM_BEAMS, do_sample=False, max_new_tokens=MAX_NEW_TOKENS
            )
        return [caption.strip() for caption in self.captioner.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def model_input(self, path: Path) -> Image.Image:
        """The upload, checked, upright, RGB and at the model's input size.

        The processor would resize to this size with this filter anyway (PIL, no reducing gap), so the model
        sees the same pixels; what crosses to a batch is a few hundred kilobytes, not a 40-megapixel photo.
        """
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale straight to about this size (square: EXIF may turn it).
        draft = None if self.input_size is None else (max(self.input_size),) * 2
        image = read_upload_image(path, draft_size=draft)
        if self.input_size is not None:
            image = image.resize(self.input_size, resample=self.resample, reducing_gap=None)
        return image

    async def caption_pass(self, images: list[Image.Image]) -> list[str]:
        """One `describe` on the caption thread, timed there: a pass may wait in its queue behind another."""

        def timed_describe() -> list[str]:
            started = time.perf_counter()
            captions = self.describe(images)
            metrics().generation_seconds.labels(IMAGE_CAPTIONING).observe(time.perf_counter() - started)
            return captions

        captions = await asyncio.get_running_loop().run_in_executor(self.describer, timed_describe)
        metrics().caption_batch_size.observe(len(images))
        metrics().outputs_generated.labels(IMAGE_CAPTIONING).inc(len(images))
        return captions

    # BentoML wants a max_batch_size of at least 2 even where the API does not batch.
    @bentoml.api(batchable=MAX_BATCH_SIZE > 1, max_batch_size=max(MAX_BATCH_SIZE, 2), max_latency_ms=MAX_LATENCY_MS)
    async def caption_batch(self, images: list[BatchImage]) -> list[str]:
        """Captions for images already at the model's input size; BentoML merges concurrent calls."""
        return await self.caption_pass(images)

    @bentoml.api(route="/caption_image")
    @answers_errors
    async def caption_image(self, image: Path) -> CaptionResult:
        """Caption an uploaded PNG, JPEG or WebP image (multipart field `image`)."""
        picture = await DECODES.run(self.model_input, image)
        # With no other caption in flight there is nothing to batch with, so the pass starts at once. Sent
        # to the dispatcher it could wait: BentoML calibrates on its first dozen passes, and two of those
        # wait for a second and a third request (up to four pass-times: 10-15 s on 2 cores for BLIP-base)
        # that a lone client never sends.
        alone = self.captions_in_flight == 0
        self.captions_in_flight += 1
        try:
            if alone:
                [caption] = await self.caption_pass([picture])
            else:
                [caption] = await self.to_async.caption_batch([await DECODES.run(batch_input, picture)])
        except BentoMLException as error:
            if int(error.error_code) not in (429, 503):
                raise
            # The dispatcher could not fit the request within MAX_LATENCY_MS, or all slots are taken.
            raise Unavailable(
                f"Image captioning is busy; retry in {CAPTION_BUSY_RETRY_AFTER_S} s.",
                retry_after=CAPTION_BUSY_RETRY_AFTER_S,
            ) from None
        finally:
            self.captions_in_flight -= 1
        return CaptionResult(caption=caption, model=self.version)


def batch_input(image: Image.Image) -> Image.Image:
    """A model input as a PNG `caption_batch` can carry (lossless: the model sees the same pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format=BATCH_IMAGE_FORMAT, compress_level=1)
    # BentoML's client sends an image as the file it was opened from, read from where that file stands.
    sendable = Image.open(buffer, formats=[BATCH_IMAGE_FORMAT])
    buffer.seek(0)
    return sendable


def model_input_size(processor) -> tuple[tuple[int, int] | None, int]:
    """The (width, height) and PIL filter the model's image processor resizes to; None if not a fixed size."""
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "size", None) or {}
    if not getattr(image_processor, "do_resize", False) or not {"height", "width"} <= set(size):
        return None, Image.Resampling.BICUBIC
    return (size["width"], size["height"]), int(image_processor.resample)


# Outermost first: the body's bounds, the gateway's own, for when this service is served alone.
ImageCaptioning.add_asgi_middleware(
    BodyGuard,
    uploads={"/caption_image": UploadField("image"), "/caption_batch": UploadField("images", MAX_BATCH_SIZE)},
)
ImageCaptioning.add_asgi_middleware(ErrorBodyMiddleware)

"""Text to image: SDXL(-Turbo) with diffusers, one service on an L40S.

Cold start: the weights are built into the Bento (model store), loaded once in `__init__`, and on a GPU one
tiny warm-up generation runs before the service reports ready, so the first user does not pay for lazy CUDA
initialisation. A diffusers pipeline and its scheduler are not safe to share between concurrent calls
(diffusers#3672), so denoising runs on a single thread, one request at a time; encoding and upload happen in
other threads, so the GPU starts the next image while the previous one is written out. Several images of one
prompt (`/generate_images`, the gateway's `n`) are one batched pipeline call with a generator per image, which
on a GPU costs far less than one call each. Each image is checked by the safety checker (`genmedia.safety`) on
the same thread and device, in the same task as its denoising, before it is encoded; a flagged one is withheld
(422), a marker stored in its place.

`/generate_image_progress` is the same generation answered as a stream of JSON lines, one after each
denoising step, for the gateway's jobs to report progress; a caller that goes away (a canceled job) stops
the denoising at the next step, and that unfinished image is never stored.
"""

import asyncio
import io
import json
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor

import bentoml

from genmedia import logger
from genmedia.contract.bodies import BodyGuard
from genmedia.contract.errors import ErrorBodyMiddleware, ServiceError, Withheld, answers_errors
from genmedia.contract.requests import CONTENT_TYPES, ImageCount, ImageRequest, ImageResult
from genmedia.cpu_allocator import keep_freed_memory
from genmedia.metrics import metrics
from genmedia.model_loading import SAFETY_CHECKER, TEXT_TO_IMAGE, load_safety_checker, load_text_to_image, pick_device
from genmedia.outputs import OutputStore
from genmedia.settings import get_settings
from services import ONE_LASTING_CONNECTION, ONE_MALLOC_ARENA

ENCODE_OPTIONS = {"png": {"optimize": False}, "webp": {"quality": 90}, "jpeg": {"quality": 92}}
WARM_UP = ImageRequest(prompt="warm-up", width=64, height=64, steps=1, seed=0)


class GenerationStopped(Exception):
    """The caller of a progress stream went away, so the generation stopped early; nothing is stored."""


def encode_image(image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format.upper(), **ENCODE_OPTIONS[format])
    return buffer.getvalue()


@bentoml.service(
    resources={"gpu": 1, "gpu_type": "nvidia-l40s"},
    # A request may wait for a cold start (minutes on BentoCloud) and queue behind other generations.
    traffic={"timeout": 600, "concurrency": 4, "max_concurrency": 32},
    runner_connection=ONE_LASTING_CONNECTION,
    envs=ONE_MALLOC_ARENA,
)
class TextToImage:
    model = bentoml.models.BentoModel(f"{TEXT_TO_IMAGE}:latest")
    safety_model = bentoml.models.BentoModel(f"{SAFETY_CHECKER}:latest")

    def __init__(self) -> None:
        started = time.perf_counter()
        self.device, self.dtype = pick_device()
        if self.device == "cpu":  # each pass reuses the last one's memory instead of faulting it in again
            keep_freed_memory()
        self.pipeline = load_text_to_image(self.model.path, self.device, self.dtype)
        self.version = str(self.model.tag)
        self.defaults = dict(self.model.info.metadata)
        self.denoiser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="denoise")
        self.outputs = OutputStore(TEXT_TO_IMAGE, get_settings())
        self.safety_checker = None
        if get_settings().safety_checker:
            self.safety_checker = load_safety_checker(self.safety_model.path, self.device, self.dtype)
        if self.device == "cuda":
            # Lazy CUDA initialisation would otherwise land on the first user. On the thread that serves
            # requests: on a CPU a warm-up buys nothing and a second thread would start a second OpenMP team.
            self.denoiser.submit(self.denoise_and_check, [WARM_UP.resolved(self.defaults)], measured=False).result()
        self.outputs.start_draining(get_settings().spool_drain_interval_s)
        logger.info(
            "text-to-image %s (source %s) ready on %s/%s in %.1f s",
            self.version,
            self.model.info.labels.get("source"),
            self.device,
            self.dtype,
            time.perf_counter() - started,
        )
        if self.safety_checker is None:
            logger.warning("SAFETY_CHECKER=off: generated images are returned unchecked")

    def denoise(
        self,
        series: list[ImageRequest],
        on_step: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ):
        """The images of resolved requests that differ in their seed only, in one batched pipeline call;
        `on_step` hears of each denoising step, and a set `stop` ends the call at the next one."""
        import torch

        def step_ended(pipeline, step: int, timestep, tensors: dict) -> dict:
            on_step(step + 1)
            if stop is not None and stop.is_set():
                pipeline._interrupt = True  # diffusers skips the remaining steps (reset at each call)
            return tensors

        # One generator per image: image i is the one its own seed gives (diffusers treats a list of one
        # generator as that generator, so a single image is what an unbatched call gives).
        generators = [torch.Generator(device=self.device).manual_seed(request.seed) for request in series]
        watched = {"callback_on_step_end": step_ended} if on_step is not None else {}
        arguments = series[0].pipeline_arguments()
        return self.pipeline(**arguments, num_images_per_prompt=len(series), generator=generators, **watched).images

    def denoise_and_check(
        self,
        series: list[ImageRequest],
        on_step: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
        measured: bool = True,
    ) -> tuple[list, list[bool]]:
        """`denoise`, then whether the safety checker withholds each image (none checked once stopped).

        One task on the denoise thread: a check submitted as a task of its own would queue behind every
        request that queued meanwhile, so under load each image would wait for all of theirs to denoise.
        Timed here, on that thread, so the model's time per call leaves out the wait in its queue and the
        check; `measured=False` (the warm-up) observes no metric.
        """
        started = time.perf_counter()
        images = self.denoise(series, on_step, stop)
        if stop is not None and stop.is_set():
            return images, []
        if measured:
            metrics().generation_seconds.labels(TEXT_TO_IMAGE).observe(time.perf_counter() - started)
        return images, [self.flagged(image, measured) for image in images]

    def flagged(self, image, measured: bool = True) -> bool:
        """Whether the safety checker withholds `image`; False when it is off."""
        if self.safety_checker is None:
            return False
        started = time.perf_counter()
        flagged = self.safety_checker.flags([image])[0]
        if measured:
            metrics().safety_check_seconds.labels(TEXT_TO_IMAGE).observe(time.perf_counter() - started)
        return flagged

    @bentoml.api(route="/generate_image")
    @answers_errors
    async def generate_image(self, request: ImageRequest, /) -> ImageResult:
        """Generate an image, store it, and answer its key and URL (from storage when already made)."""
        return (await self.make_images(request, 1))[0]

    @bentoml.api(route="/generate_images")
    @answers_errors
    async def generate_images(self, request: ImageRequest, count: ImageCount = 1) -> list[ImageResult]:
        """`count` images of one prompt, seeds s, s+1, …, in one batched call; each stored under its own key."""
        return await self.make_images(request, count)

    @bentoml.api(route="/generate_image_progress")
    async def generate_image_progress(self, request: ImageRequest, /) -> AsyncGenerator[str, None]:
        """`/generate_image` as JSON lines: `{"step", "steps"}` after each denoising step, then `{"result"}`
        (the `/generate_image` answer) or `{"error": {"status", "message"}}`."""
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue[int] = asyncio.Queue()
        stop = threading.Event()
        # The task streaming this answer ends when the caller goes away (Starlette cancels it on the
        # disconnect), while this generator may linger unfinalized: the generation stops with the task.
        asyncio.current_task().add_done_callback(lambda _: stop.set())
        total = request.resolved(self.defaults).steps
        work = asyncio.ensure_future(
            self.make_images(request, 1, lambda step: loop.call_soon_threadsafe(steps.put_nowait, step), stop)
        )
        work.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved if abandoned
        while not (work.done() and steps.empty()):
            next_step = asyncio.ensure_future(steps.get())
            await asyncio.wait({work, next_step}, return_when=asyncio.FIRST_COMPLETED)
            if next_step.done():
                yield json.dumps({"step": next_step.result(), "steps": total}) + "\n"
            else:
                next_step.cancel()
        try:
            [result] = work.result()
            yield json.dumps({"result": result.model_dump(mode="json")}) + "\n"
        except ServiceError as error:
            yield json.dumps({"error": {"status": error.status, "message": error.message}}) + "\n"

    async def make_images(
        self,
        request: ImageRequest,
        count: int,
        on_step: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[ImageResult]:
        series = [image.resolved(self.defaults) for image in request.series(count)]
        keys = [image.content_key(self.version) for image in series]
        results = [
            ImageResult.stored(image, key, self.outputs.public_url(key), self.version)
            for image, key in zip(series, keys, strict=True)
        ]
        missing = [index for index, key in enumerate(keys) if not await self.outputs.find(key, where="service")]
        if not missing:
            return results

        images, flags = await asyncio.get_running_loop().run_in_executor(
            self.denoiser, self.denoise_and_check, [series[index] for index in missing], on_step, stop
        )
        if stop is not None and stop.is_set():
            metrics().generations_stopped.labels(TEXT_TO_IMAGE).inc()
            raise GenerationStopped()
        metrics().outputs_generated.labels(TEXT_TO_IMAGE).inc(len(missing))
        withheld = 0
        for index, image, flagged in zip(missing, images, flags, strict=True):
            if flagged:
                metrics().outputs_withheld.labels(TEXT_TO_IMAGE).inc()
                logger.info("withheld %s: flagged by the safety checker", keys[index])
                await self.outputs.withhold(keys[index])
                withheld += 1
                continue
            data = await asyncio.to_thread(encode_image, image, series[index].format)
            await self.outputs.save(keys[index], data, CONTENT_TYPES[series[index].format])
            results[index] = results[index].model_copy(update={"cached": False})
        if withheld:
            # A flagged image is never returned; the others of its request are stored and answer a repeat.
            raise Withheld()
        return results


# Outermost first: the body's bounds (the same as the gateway's, for when this service is served alone).
TextToImage.add_asgi_middleware(BodyGuard)
TextToImage.add_asgi_middleware(ErrorBodyMiddleware)

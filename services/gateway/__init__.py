"""The gateway: genmedia's one public face, on CPU, guarding the paid GPUs.

A request passes these checks in order, cheapest first, and reaches a model service only if it passes all:
1. blocked IP (403, on every path), API key (401; too many wrong ones, 429), rate limit (429, shared by the
   replicas through `RATE_LIMIT_STORAGE_URL`), capacity (503), then the body: content type (415), size
   (413), deadline (408), upload form (400): `services.gateway.access.AddressCheck` and `AccessGuard`,
   middleware that answers before BentoML parses the body;
2. input validation (400): the request objects of `genmedia.contract.requests`, the same ones the model
   services take, checked by BentoML from this file's signatures (blocked prompt terms among them:
   `genmedia.contract.screening`), plus the header checks of `genmedia.contract.uploads` for captions;
3. result cache: a seeded request whose content-addressed key is already in storage is answered from
   there (`cached: true`) without waking the GPU, or refused (422) when the safety checker withheld it;
4. the model service, composed with `bentoml.depends` (its own process locally, its own containers and
   scaling on BentoCloud): `services.gateway.backends`. Down, starting or too slow ⇒ 503 + Retry-After.

Backend URLs, storage keys and API keys never appear in a response. Local files are served by
`services.gateway.files`, the named voices by `services.gateway.voices`, the OpenAI-compatible `/v1/`
routes by `services.gateway.openai`, and durable jobs (`/jobs/...`, run by the gateway's own runners) by
`services.gateway.jobs`; all of them call `make_images` and `make_speech` below like the native routes.
The playground page at `/` is `services.gateway.playground`.
"""

import asyncio
import os
from pathlib import Path

import bentoml

from genmedia import logger
from genmedia.audio import audio_duration
from genmedia.contract.errors import ErrorBodyMiddleware, answers_errors
from genmedia.contract.requests import CaptionResult, ImageRequest, ImageResult, SpeechRequest, SpeechResult
from genmedia.contract.screening import prompt_screen
from genmedia.contract.uploads import DECODES, check_upload
from genmedia.jobs.runner import Progress
from genmedia.model_loading import TEXT_TO_IMAGE, TEXT_TO_SPEECH
from genmedia.outputs import OutputStore
from genmedia.settings import get_settings
from services.gateway.access import AccessGuard, AddressCheck, Cors
from services.gateway.backends import forward, served_model, stream_lines
from services.gateway.docs import ApiDocs
from services.gateway.files import files_app
from services.gateway.jobs import jobs_app, run_jobs
from services.gateway.openai import OpenAIErrors, openai_app
from services.gateway.playground import Playground
from services.gateway.voices import voices_app
from services.image_captioning import ImageCaptioning
from services.text_to_image import TextToImage
from services.text_to_speech import TextToSpeech

# Requests the gateway works on at once; AccessGuard answers 503 + Retry-After beyond it. (BentoML's own
# `traffic.max_concurrency` would answer a bare 429, without Retry-After or CORS headers, so it is not set.)
MAX_IN_FLIGHT = 256

# uvicorn replaces the client address with X-Forwarded-For for loopback peers unless told to trust no one;
# the gateway decides whom to believe itself (TRUSTED_PROXIES, services.gateway.access), so nobody may spoof it.
os.environ["FORWARDED_ALLOW_IPS"] = ""


@bentoml.service(
    # The gateway only awaits I/O, so it takes many requests at once.
    traffic={"timeout": 660, "concurrency": 64},
    # /readyz must not wake scaled-to-zero GPU services by probing them.
    runner_probe={"enabled": False},
)
class Gateway:
    text_to_image = bentoml.depends(TextToImage)
    text_to_speech = bentoml.depends(TextToSpeech)
    image_captioning = bentoml.depends(ImageCaptioning)

    def __init__(self) -> None:
        self.settings = get_settings()
        self.images = OutputStore(TEXT_TO_IMAGE, self.settings, spooled=False)
        self.audio = OutputStore(TEXT_TO_SPEECH, self.settings, spooled=False)
        self.image_model = served_model(TEXT_TO_IMAGE)
        self.speech_model = served_model(TEXT_TO_SPEECH)
        # A bad BLOCKED_PROMPT_TERMS_FILE fails the start, not the first prompt.
        prompt_screen()
        if not self.settings.gateway_api_keys:
            logger.warning("GATEWAY_API_KEYS is empty: anyone who can reach this gateway can use it")
        logger.info("gateway ready: %r", self.settings)

    @bentoml.on_startup
    async def start_job_runners(self) -> None:
        executors = {"generate_image": self.run_image_job, "synthesize_speech": self.run_speech_job}
        self.job_work = asyncio.create_task(run_jobs(executors))

    @bentoml.on_shutdown
    async def stop_job_runners(self) -> None:
        self.job_work.cancel()
        await asyncio.gather(self.job_work, return_exceptions=True)

    async def run_image_job(self, request: dict, progress: Progress) -> dict:
        return plain(await self.make_image(ImageRequest.model_validate(request), progress))

    async def run_speech_job(self, request: dict, progress: Progress) -> dict:
        return plain(await self.make_speech(SpeechRequest.model_validate(request), progress))

    async def make_image(self, request: ImageRequest, progress: Progress | None = None) -> ImageResult:
        return (await self.make_images(request, 1, progress))[0]

    async def make_images(
        self, request: ImageRequest, count: int, progress: Progress | None = None
    ) -> list[ImageResult]:
        """`count` images of one prompt (seeds s, s+1, …): from storage when all are there, else one call.
        A job's `progress` follows the denoising steps of its one image (and drops the stream when canceled)."""
        seeded = request.seed is not None
        # The seed is drawn here, not in the service, so the answer names it even when it comes from storage.
        series = request.series(count)
        if self.image_model and seeded:
            version, defaults = self.image_model
            keys = [image.resolved(defaults).content_key(version) for image in series]
            if all([await self.images.find(key, where="gateway") for key in keys]):
                return [
                    ImageResult.stored(image, key, self.images.public_url(key), version)
                    for image, key in zip(series, keys, strict=True)
                ]
        first = series[0].model_dump()
        if progress is not None:
            answer = forward(
                "TextToImage",
                "Image generation",
                lambda: progress.follow(
                    stream_lines(self.text_to_image, "generate_image_progress", first), ImageResult
                ),
                self.settings.backend_timeout_s,
            )
            return [await progress.watch(self.text_to_image, "the image service", answer)]
        if count == 1:
            call = self.text_to_image.to_async.generate_image
            return [
                await forward("TextToImage", "Image generation", lambda: call(first), self.settings.backend_timeout_s)
            ]
        call = self.text_to_image.to_async.generate_images
        results = await forward(
            "TextToImage", "Image generation", lambda: call(request=first, count=count), self.settings.backend_timeout_s
        )
        return [ImageResult.model_validate(result) for result in results]

    async def make_speech(self, request: SpeechRequest, progress: Progress | None = None) -> SpeechResult:
        seeded = request.seed is not None
        request = request.drawn_seed()
        if self.speech_model and seeded:
            version, defaults = self.speech_model
            key = request.resolved(defaults).content_key(version)
            if await self.audio.find(key, where="gateway"):
                stored = await asyncio.to_thread(self.audio.store.get, key)
                return SpeechResult(
                    file_key=key,
                    public_url=self.audio.public_url(key),
                    sample_rate=int(defaults["sampling_rate"]),
                    duration_s=audio_duration(stored.data),
                    format=request.format,
                    model=version,
                    cached=True,
                )
        answer = forward(
            "TextToSpeech",
            "Speech synthesis",
            lambda: self.text_to_speech.to_async.synthesize_speech(request.model_dump()),
            self.settings.backend_timeout_s,
        )
        return await (progress.watch(self.text_to_speech, "the speech service", answer) if progress else answer)

    @bentoml.api(route="/generate_image")
    @answers_errors
    async def generate_image(self, request: ImageRequest, /) -> ImageResult:
        """Generate an image from a prompt; answers its `file_key` and `public_url`."""
        return await self.make_image(request)

    @bentoml.api(route="/synthesize_speech")
    @answers_errors
    async def synthesize_speech(self, request: SpeechRequest, /) -> SpeechResult:
        """Speak `text` in the voice `description` describes; answers its `file_key` and `public_url`."""
        return await self.make_speech(request)

    @bentoml.api(route="/caption_image")
    @answers_errors
    async def caption_image(self, image: Path) -> CaptionResult:
        """Caption an uploaded PNG, JPEG or WebP image (multipart field `image`)."""
        # Headers only: the captioner does the one full decode (`genmedia.contract.uploads` says why).
        await DECODES.run(check_upload, image)
        # Forwarded under a name of our own: the captioner keeps an upload in a file named after it.
        forwarded = image.rename(image.with_name("upload"))
        return await forward(
            "ImageCaptioning",
            "Image captioning",
            lambda: self.image_captioning.to_async.caption_image(image=forwarded),
            self.settings.backend_timeout_s,
        )


def plain(result) -> dict:
    """A result as JSON-ready data, whether the model service's client answered a model or a dict."""
    return result.model_dump(mode="json") if hasattr(result, "model_dump") else dict(result)


Gateway.mount_asgi_app(files_app, path="/files")
Gateway.mount_asgi_app(voices_app, path="/")
Gateway.mount_asgi_app(openai_app, path="/v1")
Gateway.mount_asgi_app(jobs_app, path="/jobs")
# Outermost first: the block list (no CORS headers for a blocked client, not even a preflight), CORS headers
# even on the other refusals, then OpenAI's error shape under /v1/ (around every refusal), then the access
# checks, then error-body rewriting.
Gateway.add_asgi_middleware(AddressCheck)
Gateway.add_asgi_middleware(Cors)
Gateway.add_asgi_middleware(OpenAIErrors)
Gateway.add_asgi_middleware(AccessGuard, max_in_flight=MAX_IN_FLIGHT)
Gateway.add_asgi_middleware(ErrorBodyMiddleware)
# Before ApiDocs, which hands `/docs` to BentoML's page at `/`: the playground answers the browser's own `/`.
Gateway.add_asgi_middleware(Playground)
Gateway.add_asgi_middleware(ApiDocs)

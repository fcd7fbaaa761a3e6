"""The gateway: genmedia's one public face, on CPU, guarding the paid GPUs.

A request passes these checks in order, cheapest first, and reaches a model service only if it passes all:
1. blocked IP (403), API key (401), rate limit (429), content type (415), body size (413):
   `services.gateway.access.AccessGuard`, middleware that answers before the body is parsed;
2. input validation (400): the request objects of `genmedia.contract.requests`, the same ones the model
   services take, checked by BentoML from this file's signatures, plus the upload checks of
   `genmedia.contract.uploads` for captions;
3. result cache: a seeded request whose content-addressed key is already in storage is answered from
   there (`cached: true`) without waking the GPU;
4. the model service, composed with `bentoml.depends` (its own process locally, its own containers and
   scaling on BentoCloud): `services.gateway.backends`. Down, starting or too slow ⇒ 503 + Retry-After.

Backend URLs, storage keys and API keys never appear in a response. Local files are served by
`services.gateway.files`, the playground page at `/` by `services.gateway.playground`.
"""

import asyncio
import os
from pathlib import Path

import bentoml

from genmedia import logger
from genmedia.audio import audio_duration
from genmedia.contract.errors import ErrorBodyMiddleware, answers_errors
from genmedia.contract.requests import CaptionResult, ImageRequest, ImageResult, SpeechRequest, SpeechResult
from genmedia.contract.uploads import read_upload_image
from genmedia.model_loading import TEXT_TO_IMAGE, TEXT_TO_SPEECH
from genmedia.outputs import OutputStore
from genmedia.settings import get_settings
from services.gateway.access import AccessGuard, Cors
from services.gateway.backends import forward, served_model
from services.gateway.docs import ApiDocs
from services.gateway.files import files_app
from services.gateway.playground import Playground
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
    # Tasks default a service to concurrency 1; the gateway only awaits I/O, so it takes many at once.
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
        if not self.settings.gateway_api_keys:
            logger.warning("GATEWAY_API_KEYS is empty: anyone who can reach this gateway can use it")
        logger.info("gateway ready: %r", self.settings)

    async def make_image(self, request: ImageRequest) -> ImageResult:
        seeded = request.seed is not None
        # The seed is drawn here, not in the service, so the answer names it even when it comes from storage.
        request = request.drawn_seed()
        if self.image_model and seeded:
            version, defaults = self.image_model
            key = request.resolved(defaults).content_key(version)
            if await self.images.find(key, where="gateway"):
                return ImageResult(
                    file_key=key,
                    public_url=self.images.public_url(key),
                    seed=request.seed,
                    width=request.width,
                    height=request.height,
                    format=request.format,
                    model=version,
                    cached=True,
                )
        return await forward(
            "TextToImage",
            "Image generation",
            lambda: self.text_to_image.to_async.generate_image(request.model_dump()),
            self.settings.backend_timeout_s,
        )

    async def make_speech(self, request: SpeechRequest) -> SpeechResult:
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
        return await forward(
            "TextToSpeech",
            "Speech synthesis",
            lambda: self.text_to_speech.to_async.synthesize_speech(request.model_dump()),
            self.settings.backend_timeout_s,
        )

    @bentoml.api(route="/generate_image")
    @answers_errors
    async def generate_image(self, request: ImageRequest, /) -> ImageResult:
        """Generate an image from a prompt; answers its `file_key` and `public_url`."""
        return await self.make_image(request)

    @bentoml.task(route="/generate_image_async")
    @answers_errors
    async def generate_image_async(self, request: ImageRequest, /) -> ImageResult:
        """`/generate_image` as a job: submit, poll status, get the result."""
        return await self.make_image(request)

    @bentoml.api(route="/synthesize_speech")
    @answers_errors
    async def synthesize_speech(self, request: SpeechRequest, /) -> SpeechResult:
        """Speak `text` in the voice `description` describes; answers its `file_key` and `public_url`."""
        return await self.make_speech(request)

    @bentoml.task(route="/synthesize_speech_async")
    @answers_errors
    async def synthesize_speech_async(self, request: SpeechRequest, /) -> SpeechResult:
        """`/synthesize_speech` as a job: submit, poll status, get the result."""
        return await self.make_speech(request)

    @bentoml.api(route="/caption_image")
    @answers_errors
    async def caption_image(self, image: Path) -> CaptionResult:
        """Caption an uploaded PNG, JPEG or WebP image (multipart field `image`)."""
        await asyncio.to_thread(read_upload_image, image)
        return await forward(
            "ImageCaptioning",
            "Image captioning",
            lambda: self.image_captioning.to_async.caption_image(image=image),
            self.settings.backend_timeout_s,
        )


Gateway.mount_asgi_app(files_app, path="/files")
# Outermost first: CORS headers even on refusals, then the access checks, then error-body rewriting.
Gateway.add_asgi_middleware(Cors)
Gateway.add_asgi_middleware(AccessGuard, max_in_flight=MAX_IN_FLIGHT)
Gateway.add_asgi_middleware(ErrorBodyMiddleware)
# Before ApiDocs, which hands `/docs` to BentoML's page at `/`: the playground answers the browser's own `/`.
Gateway.add_asgi_middleware(Playground)
Gateway.add_asgi_middleware(ApiDocs)

"""The gateway: genmedia's one public face, on CPU, guarding the paid GPUs.

A request passes these checks in order, cheapest first, and reaches a model service only if it passes all:
1. blocked IP (403), API key (401), rate limit (429), body size (413): `services.gateway.access.AccessGuard`,
   middleware that answers before the body is parsed;
2. input validation (400): the same `genmedia.contract.requests` types the model services declare, checked by
   BentoML from this file's signatures, blocked prompt terms among them (`genmedia.contract.screening`),
   plus the upload checks of `genmedia.contract.uploads` for captions;
3. result cache: a seeded request whose content-addressed key is already in storage is answered from
   there (`cached: true`) without waking the GPU, or refused (422) when the safety checker withheld it;
4. the model service, composed with `bentoml.depends` (its own process locally, its own containers and
   scaling on BentoCloud). Down, starting or too slow ⇒ 503 + Retry-After naming the capability.

Backend URLs, storage keys and API keys never appear in a response.
"""

import asyncio
import functools
import json
import os
import secrets
from pathlib import Path

import aiohttp
import bentoml
import httpx
from bentoml.exceptions import BentoMLException
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genmedia import logger
from genmedia.audio import audio_duration
from genmedia.contract.errors import (
    WITHHELD_MESSAGE,
    ErrorBodyMiddleware,
    ServiceError,
    Unavailable,
    Withheld,
    answers_errors,
    error_response,
)
from genmedia.contract.requests import (
    DEFAULT_IMAGE_SIDE,
    DEFAULT_VOICE,
    MAX_SEED,
    AudioFormat,
    CaptionResult,
    GuidanceScale,
    ImageFormat,
    ImageResult,
    ImageSide,
    NegativePrompt,
    Prompt,
    Seed,
    SpeechResult,
    SpeechText,
    Steps,
    VoiceDescription,
    image_key,
    speech_key,
)
from genmedia.contract.screening import prompt_screen
from genmedia.contract.uploads import read_upload_image
from genmedia.metrics import metrics
from genmedia.model_loading import TEXT_TO_IMAGE, TEXT_TO_SPEECH, stored_model
from genmedia.outputs import WITHHELD_CONTENT_TYPE, OutputStore
from genmedia.outputs.storage import InvalidKey, LocalObjectStore, ObjectNotFound, open_store, validate_key
from genmedia.settings import get_settings
from services.gateway.access import AccessGuard, Cors
from services.image_captioning import ImageCaptioning
from services.text_to_image import TextToImage
from services.text_to_speech import TextToSpeech

BACKEND_RETRY_AFTER_S = 30
BUSY_RETRY_AFTER_S = 5
# Requests the gateway works on at once; AccessGuard answers 503 + Retry-After beyond it. (BentoML's own
# `traffic.max_concurrency` would answer a bare 429, without Retry-After or CORS headers, so it is not set.)
MAX_IN_FLIGHT = 256

# uvicorn replaces the client address with X-Forwarded-For for loopback peers unless told to trust no one;
# the gateway decides whom to believe itself (TRUSTED_PROXIES, services.gateway.access), so nobody may spoof it.
os.environ["FORWARDED_ALLOW_IPS"] = ""


async def forward(service: str, capability: str, call, timeout_s: float):
    """Await a model service call; its failures become errors a client can act on."""
    metrics().gateway_forwarded.labels(service).inc()
    try:
        return await asyncio.wait_for(call, timeout_s)
    except BentoMLException as error:
        status = int(error.error_code)
        message = backend_message(str(error))
        if status == 429:
            # The service's queue is full (its max_concurrency): not the client's rate limit.
            raise Unavailable(
                f"{capability} is busy; retry in {BUSY_RETRY_AFTER_S} s.", retry_after=BUSY_RETRY_AFTER_S
            ) from None
        if status < 500 and message:
            raise ServiceError(message, status=status) from None
        if status == 503 and message:
            # The service answered, e.g. storage is down and its output is spooled: pass its advice on.
            raise Unavailable(message, retry_after=BACKEND_RETRY_AFTER_S) from None
        failure = f"answered {status}"
    except (TimeoutError, httpx.TimeoutException):
        failure = f"did not answer within {timeout_s} s"
    except (httpx.HTTPError, aiohttp.ClientError, OSError):
        # BentoML's client is aiohttp: a service killed mid-call is a ServerDisconnectedError.
        failure = "is not reachable (starting, restarting or down)"
    except asyncio.CancelledError:
        # aiohttp cancels the calls waiting for a connection when BentoML's client closes its session (every
        # runner_connection.max_requests calls): the call failed, this request was not cancelled.
        if asyncio.current_task().cancelling():
            raise
        failure = "dropped the call"
    metrics().backend_unavailable.labels(service).inc()
    logger.warning("%s %s", service, failure)
    raise Unavailable(
        f"{capability} is unavailable right now; retry in {BACKEND_RETRY_AFTER_S} s.", retry_after=BACKEND_RETRY_AFTER_S
    )


def backend_message(text: str) -> str | None:
    """The `error` message of a model service's JSON error body, if it is one."""
    body = text.partition(": ")[2] if text.startswith("Error making request") else text
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    return parsed.get("error") if isinstance(parsed, dict) else None


def model_defaults(name: str) -> tuple[str, dict] | None:
    """The store tag and metadata of the model a service will serve, read without loading weights."""
    try:
        model = stored_model(name)
    except BentoMLException as error:
        logger.warning("no result cache for %s in the gateway: %s", name, error)
        return None
    return str(model.tag), dict(model.info.metadata)


@bentoml.service(
    # Tasks default a service to concurrency 1; the gateway only awaits I/O, so it takes many at once.
    traffic={"timeout": 660, "concurrency": 64},
    # /readyz must not wake scaled-to-zero GPU services by probing them.
    runner_probe={"enabled": False},
)
class Gateway:
    image_generator = bentoml.depends(TextToImage)
    speech_synthesizer = bentoml.depends(TextToSpeech)
    image_captioner = bentoml.depends(ImageCaptioning)

    def __init__(self) -> None:
        self.settings = get_settings()
        self.images = OutputStore("images", self.settings, spooled=False)
        self.audio = OutputStore("audio", self.settings, spooled=False)
        self.image_model = model_defaults(TEXT_TO_IMAGE)
        self.speech_model = model_defaults(TEXT_TO_SPEECH)
        # A bad BLOCKED_PROMPT_TERMS_FILE fails the start, not the first prompt.
        prompt_screen()
        if not self.settings.gateway_api_keys:
            logger.warning("GATEWAY_API_KEYS is empty: anyone who can reach this gateway can use it")
        logger.info("gateway ready: %r", self.settings)

    async def make_image(self, request: dict) -> ImageResult:
        seeded = request["seed"] is not None
        request["seed"] = request["seed"] if seeded else secrets.randbelow(MAX_SEED)
        if self.image_model and seeded:
            version, defaults = self.image_model
            steps = request["steps"] or int(defaults["default_steps"])
            guidance = request["guidance_scale"]
            guidance = float(defaults["default_guidance_scale"]) if guidance is None else guidance
            key = image_key(version, **{**request, "steps": steps, "guidance_scale": guidance})
            if await self.images.find(key, where="gateway"):
                return ImageResult(
                    file_key=key,
                    public_url=self.images.public_url(key),
                    seed=request["seed"],
                    width=request["width"],
                    height=request["height"],
                    format=request["format"],
                    model=version,
                    cached=True,
                )
        call = self.image_generator.to_async.generate_image(**request)
        return await forward("TextToImage", "Image generation", call, self.settings.backend_timeout_s)

    async def make_speech(self, request: dict) -> SpeechResult:
        seeded = request["seed"] is not None
        request["seed"] = request["seed"] if seeded else secrets.randbelow(MAX_SEED)
        if self.speech_model and seeded:
            version, defaults = self.speech_model
            key = speech_key(version, **request)
            if await self.audio.find(key, where="gateway"):
                stored = await asyncio.to_thread(self.audio.store.get, key)
                return SpeechResult(
                    file_key=key,
                    public_url=self.audio.public_url(key),
                    sample_rate=int(defaults["sampling_rate"]),
                    duration_s=audio_duration(stored.data),
                    format=request["format"],
                    model=version,
                    cached=True,
                )
        call = self.speech_synthesizer.to_async.synthesize_speech(**request)
        return await forward("TextToSpeech", "Speech synthesis", call, self.settings.backend_timeout_s)

    @bentoml.api(route="/generate_image")
    @answers_errors
    async def generate_image(
        self,
        prompt: Prompt = "a watercolor painting of a fox in a snowy forest",
        negative_prompt: NegativePrompt | None = None,
        width: ImageSide = DEFAULT_IMAGE_SIDE,
        height: ImageSide = DEFAULT_IMAGE_SIDE,
        steps: Steps | None = None,
        guidance_scale: GuidanceScale | None = None,
        seed: Seed | None = None,
        format: ImageFormat = "png",
    ) -> ImageResult:
        """Generate an image from a prompt; answers its `file_key` and `public_url`."""
        return await self.make_image(
            dict(
                prompt=prompt,
                negative_prompt=negative_prompt,
                width=width,
                height=height,
                steps=steps,
                guidance_scale=guidance_scale,
                seed=seed,
                format=format,
            )
        )

    @bentoml.task(route="/generate_image_async")
    @answers_errors
    async def generate_image_async(
        self,
        prompt: Prompt = "a watercolor painting of a fox in a snowy forest",
        negative_prompt: NegativePrompt | None = None,
        width: ImageSide = DEFAULT_IMAGE_SIDE,
        height: ImageSide = DEFAULT_IMAGE_SIDE,
        steps: Steps | None = None,
        guidance_scale: GuidanceScale | None = None,
        seed: Seed | None = None,
        format: ImageFormat = "png",
    ) -> ImageResult:
        """`/generate_image` as a job: submit, poll status, get the result."""
        return await self.make_image(
            dict(
                prompt=prompt,
                negative_prompt=negative_prompt,
                width=width,
                height=height,
                steps=steps,
                guidance_scale=guidance_scale,
                seed=seed,
                format=format,
            )
        )

    @bentoml.api(route="/synthesize_speech")
    @answers_errors
    async def synthesize_speech(
        self,
        text: SpeechText = "Hello from genmedia. This is a test of the speech service.",
        description: VoiceDescription = DEFAULT_VOICE,
        format: AudioFormat = "wav",
        seed: Seed | None = None,
    ) -> SpeechResult:
        """Speak `text` in the voice `description` describes; answers its `file_key` and `public_url`."""
        return await self.make_speech(dict(text=text, description=description, format=format, seed=seed))

    @bentoml.task(route="/synthesize_speech_async")
    @answers_errors
    async def synthesize_speech_async(
        self,
        text: SpeechText = "Hello from genmedia. This is a test of the speech service.",
        description: VoiceDescription = DEFAULT_VOICE,
        format: AudioFormat = "wav",
        seed: Seed | None = None,
    ) -> SpeechResult:
        """`/synthesize_speech` as a job: submit, poll status, get the result."""
        return await self.make_speech(dict(text=text, description=description, format=format, seed=seed))

    @bentoml.api(route="/caption_image")
    @answers_errors
    async def caption_image(self, image: Path) -> CaptionResult:
        """Caption an uploaded PNG, JPEG or WebP image (multipart field `image`)."""
        await asyncio.to_thread(read_upload_image, image)
        call = self.image_captioner.to_async.caption_image(image=image)
        return await forward("ImageCaptioning", "Image captioning", call, self.settings.backend_timeout_s)


@functools.cache
def files_store() -> LocalObjectStore | None:
    """The local store `/files` serves from; None when outputs live in Supabase Storage."""
    store = open_store(get_settings())
    return store if isinstance(store, LocalObjectStore) else None


async def serve_file(request) -> Response:
    """`GET /files/{file_key}`: the bytes behind a local-storage `public_url`."""
    store = files_store()
    if store is None:
        return error_response(404, "Files are served by the storage backend; use the public_url you were given.")
    try:
        stored = await asyncio.to_thread(store.get, validate_key(request.path_params["file_key"]))
    except InvalidKey as error:
        return error_response(400, f"file_key: {error}")
    except ObjectNotFound:
        return error_response(404, "No file under that key.")
    if stored.content_type == WITHHELD_CONTENT_TYPE:
        return error_response(Withheld.status, WITHHELD_MESSAGE)
    return Response(
        stored.data, media_type=stored.content_type, headers={"Cache-Control": "public, max-age=31536000, immutable"}
    )


files_app = Starlette(routes=[Route("/{file_key:path}", serve_file, methods=["GET"])])
files_app.add_exception_handler(404, lambda request, exc: JSONResponse({"error": "Not found."}, status_code=404))

Gateway.mount_asgi_app(files_app, path="/files")
# Outermost first: CORS headers even on refusals, then the access checks, then error-body rewriting.
Gateway.add_asgi_middleware(Cors)
Gateway.add_asgi_middleware(AccessGuard, max_in_flight=MAX_IN_FLIGHT)
Gateway.add_asgi_middleware(ErrorBodyMiddleware)

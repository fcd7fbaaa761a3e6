"""OpenAI-compatible routes under `/v1/`, so the official `openai` SDKs work with `base_url=<gateway>/v1`.

A thin translation layer: each route maps OpenAI's body onto the native request object (`ImageRequest`,
`SpeechRequest`), which keeps its bounds and its content key, and calls the Gateway's own `make_images` and
`make_speech`, so the checks, the cache and the storage are the native routes' (a cached seeded image is
answered without the GPU here too). Only OpenAI's own fields are declared here (`n`, `size`,
`response_format`, …); every other field passes through to the request object, where the extensions (`seed`,
`negative_prompt`, `steps`, `guidance_scale`, …) are defined once.

The routes are a Starlette app mounted on the Gateway (a `@bentoml.api` method cannot choose its error
body); they reach the serving Gateway instance, and through it its `bentoml.depends` clients, with
`bentoml.get_current_service()`. Every error under `/v1/`, the access checks' refusals included, is reshaped
by `OpenAIErrors` at the edge into OpenAI's `{"error": {"message", "type", "param", "code"}}`, so the SDKs
raise their typed errors (`BadRequestError`, `AuthenticationError`, `RateLimitError`, …).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genmedia.audio import FIXED_RATES, convert_audio
from genmedia.contract.errors import FIELD_PROBLEMS, STORAGE_RETRY_AFTER_S, InvalidInput, Unavailable, answers_errors
from genmedia.contract.requests import CONTENT_TYPES, DEFAULT_IMAGE_SIDE, ImageCount, ImageRequest, SpeechRequest
from genmedia.model_loading import ROLES, stored_model
from genmedia.outputs import OutputStore
from genmedia.outputs.storage import StorageError

SpeechFormat = Literal["mp3", "opus", "flac", "wav", "pcm"]
SPEECH_CONTENT_TYPES = {**CONTENT_TYPES, "opus": "audio/ogg", "pcm": "audio/pcm"}
# What `/v1/` calls the native fields it sets from its own: a native name sent here is refused, and an error
# in one is reported under the `/v1/` name (OpenAI's `param`).
IMAGE_FIELD_NAMES = {"width": "size", "height": "size", "format": "output_format"}
SPEECH_FIELD_NAMES = {"text": "input", "format": "response_format", "voice": "voice", "description": "voice"}


class ImageGeneration(BaseModel):
    """OpenAI's own fields of `images.generate`; the others are `ImageRequest`'s, passed through."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None  # any name: one model serves each capability (`GET /v1/models`)
    n: ImageCount = 1
    size: Annotated[str, Field(pattern=r"^(auto|\d+x\d+)$")] = f"{DEFAULT_IMAGE_SIDE}x{DEFAULT_IMAGE_SIDE}"
    response_format: Literal["url", "b64_json"] = "url"
    output_format: str | None = None  # the file format, checked as `ImageRequest.format`
    user: str | None = None  # OpenAI's end-user id, for its abuse monitoring: accepted, unused

    def image_request(self) -> ImageRequest:
        mapped = {}
        if self.output_format is not None:
            mapped["format"] = self.output_format
        if self.size != "auto":
            width, _, height = self.size.partition("x")
            mapped.update(width=int(width), height=int(height))
        return built(ImageRequest, self.model_extra or {}, mapped, IMAGE_FIELD_NAMES)


class SpeechCreation(BaseModel):
    """OpenAI's own fields of `audio.speech.create`; the others are `SpeechRequest`'s (`speed`, `seed`, …)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None  # any name, as for images
    input: str
    voice: str | None = None
    response_format: SpeechFormat = "mp3"

    def speech_request(self) -> SpeechRequest:
        mapped = {"text": self.input, "format": self.stored_format()}
        if self.voice is not None:
            # A one-word voice is a name (a misspelled one is a 400 listing the names); words describe a voice.
            mapped["description" if len(self.voice.split()) > 1 else "voice"] = self.voice
        return built(SpeechRequest, self.model_extra or {}, mapped, SPEECH_FIELD_NAMES)

    def stored_format(self) -> str:
        """The file the speech service makes: the one asked for, or lossless FLAC to convert from."""
        return "flac" if self.response_format in FIXED_RATES else self.response_format


def built(model: type[BaseModel], extensions: Mapping[str, Any], mapped: Mapping[str, Any], names: Mapping[str, str]):
    """The request object of the fields passed through and those mapped from OpenAI's, or a 400 naming each
    invalid field as `/v1/` calls it (`size` for `width`, …)."""
    if misplaced := sorted(set(extensions) & set(names)):
        field = misplaced[0]
        raise InvalidInput(f"{field}: unknown field here; /v1/ sets it with {names[field]}")
    try:
        return model(**extensions, **mapped)
    except ValidationError as error:
        raise invalid_input(error, names) from None


def invalid_input(error: ValidationError, names: Mapping[str, str] | None = None) -> InvalidInput:
    parts = []
    for detail in error.errors():
        field = ".".join(str(part) for part in detail["loc"]) or "body"
        problem = FIELD_PROBLEMS.get(detail["type"], detail["msg"])
        if field in (names or {}) and names[field] != field:
            field, problem = names[field], f"({field}) {problem}"
        parts.append(f"{field}: {problem}")
    return InvalidInput("; ".join(parts))


async def json_body(request: Request, model: type[BaseModel]):
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput(f"body: {FIELD_PROBLEMS['json_invalid']}") from None
    if not isinstance(body, dict):
        raise InvalidInput("body: send a JSON object")
    try:
        return model(**body)
    except ValidationError as error:
        raise invalid_input(error) from None


async def stored_bytes(outputs: OutputStore, key: str) -> bytes:
    try:
        return (await asyncio.to_thread(outputs.store.get, key)).data
    except StorageError:
        raise Unavailable(
            f"Storage is unavailable; retry in {STORAGE_RETRY_AFTER_S} s.", retry_after=STORAGE_RETRY_AFTER_S
        ) from None


@answers_errors
async def create_images(request: Request) -> Response:
    """`POST /v1/images/generations`: `n` images in one batched call, each stored under its own key."""
    generation = await json_body(request, ImageGeneration)
    gateway = bentoml.get_current_service()
    results = await gateway.make_images(generation.image_request(), generation.n)
    if generation.response_format == "b64_json":
        files = [await stored_bytes(gateway.images, result.file_key) for result in results]
        data = [{"b64_json": base64.b64encode(file).decode()} for file in files]
    else:
        data = [{"url": result.public_url} for result in results]
    return JSONResponse({"created": int(time.time()), "data": data})


@answers_errors
async def create_speech(request: Request) -> Response:
    """`POST /v1/audio/speech`: the audio bytes, in `response_format`, with their content type."""
    creation = await json_body(request, SpeechCreation)
    gateway = bentoml.get_current_service()
    result = await gateway.make_speech(creation.speech_request())
    audio = await stored_bytes(gateway.audio, result.file_key)
    if creation.response_format in FIXED_RATES:
        audio = await asyncio.to_thread(convert_audio, audio, creation.response_format)
    return Response(audio, media_type=SPEECH_CONTENT_TYPES[creation.response_format])


@answers_errors
async def list_models(request: Request) -> Response:
    """`GET /v1/models`: the models this deployment serves, named by role."""
    models = []
    for role in ROLES:
        try:
            model = await asyncio.to_thread(stored_model, role)
        except BentoMLException:
            continue
        created = int(model.info.creation_time.timestamp())
        models.append({"id": role, "object": "model", "created": created, "owned_by": "genmedia"})
    return JSONResponse({"object": "list", "data": models})


openai_app = Starlette(
    routes=[
        Route("/images/generations", create_images, methods=["POST"]),
        Route("/audio/speech", create_speech, methods=["POST"]),
        Route("/models", list_models, methods=["GET"]),
    ]
)

# OpenAI's `type` and `code` for each status the contract gives.
ERROR_KINDS = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    422: ("invalid_request_error", "content_policy_violation"),
    429: ("requests", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}
LEADING_FIELD = re.compile(r"^([A-Za-z_][\w.]*): ")


def openai_error(status: int, message: str) -> dict[str, Any]:
    """OpenAI's error object for one of our messages; a 400's leading field name becomes `param`."""
    kind, code = ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    field = LEADING_FIELD.match(message) if status == 400 else None
    return {"message": message, "type": kind, "param": field.group(1) if field else None, "code": code}


def openai_error_body(status: int, body: bytes) -> bytes:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return body
    message = error if isinstance(error, str) else f"The request failed with status {status}."
    return json.dumps({"error": openai_error(status, message)}).encode()


class OpenAIErrors:
    """ASGI middleware: under `/v1/`, every error body (`{"error": "..."}` by the contract) in OpenAI's shape."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def reshape(message):
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = openai_error_body(start["status"], b"".join(chunks))
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
            ]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshape)

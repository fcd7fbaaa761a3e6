"""What a valid request and a result look like, defined once for the gateway and every model service.

One request object per capability (`ImageRequest`, `SpeechRequest`) holds each field's bounds, description
and example (so `/docs` and the generated client explain every field from that one line), resolves the
defaults that come from the model (`resolved`), and names its output (`content_key`). The gateway routes,
the model services and the result cache all take these objects, so adding a field is one edit here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from genmedia.contract.errors import InvalidInput
from genmedia.contract.screening import screened
from genmedia.contract.voices import VOICES, VoiceName

MAX_SEED = 2**32
DEFAULT_IMAGE_SIDE = 512
DEFAULT_VOICE = (
    "A clear, neutral voice speaks at a moderate pace in a quiet room, with very clear audio and no background noise."
)

ImageSide = Annotated[int, Field(ge=64, le=1536, multiple_of=8)]
ImageFormat = Literal["png", "webp", "jpeg"]
AudioFormat = Literal["wav", "flac", "ogg", "mp3"]
Seed = Annotated[int, Field(ge=0, lt=MAX_SEED)]
# Images of one prompt made in one batched pipeline call (`ImageRequest.series`).
MAX_IMAGES_PER_CALL = 4
ImageCount = Annotated[int, Field(ge=1, le=MAX_IMAGES_PER_CALL)]

# Uploads to /caption_image: checked before the image is fully decoded.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
ACCEPTED_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")

CONTENT_TYPES = {
    "png": "image/png",
    "webp": "image/webp",
    "jpeg": "image/jpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
}


class Request(BaseModel):
    # A misspelled field is a 400 naming it, never a silently ignored option.
    model_config = ConfigDict(extra="forbid")

    def drawn_seed(self) -> Request:
        """This request with its seed drawn, if it had none: the seed is part of what names the output."""
        return self if self.seed is not None else self.model_copy(update={"seed": secrets.randbelow(MAX_SEED)})


class ImageRequest(Request):
    # Screened for blocked terms (genmedia.contract.screening); the negative prompt is not: naming what to avoid
    # is what it is for.
    prompt: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000), AfterValidator(screened)
    ] = Field(
        description="What the image shows, in plain words (1 to 1000 characters).",
        examples=["a lighthouse at dawn, watercolor"],
    )
    negative_prompt: Annotated[
        str, BeforeValidator(lambda value: "" if value is None else value), StringConstraints(max_length=1000)
    ] = Field("", description="What the image should not show (at most 1000 characters).", examples=["blurry, text"])
    width: ImageSide = Field(DEFAULT_IMAGE_SIDE, description="Width in pixels: 64 to 1536, a multiple of 8.")
    height: ImageSide = Field(DEFAULT_IMAGE_SIDE, description="Height in pixels: 64 to 1536, a multiple of 8.")
    steps: Annotated[int, Field(ge=1, le=100)] | None = Field(
        None, description="Denoising steps, 1 to 100; default: the model's own (1 for SDXL-Turbo).", examples=[1]
    )
    guidance_scale: Annotated[float, Field(ge=0, le=20)] | None = Field(
        None, description="How closely to follow the prompt, 0 to 20; default: the model's own (0 for SDXL-Turbo)."
    )
    seed: Seed | None = Field(
        None,
        description="Random seed, 0 ≤ seed < 2³². The same seeded request gives the same image, answered from "
        "storage; without one a seed is drawn (and answered).",
        examples=[7],
    )
    format: ImageFormat = Field("png", description="File format of the image.")

    def resolved(self, model_defaults: Mapping[str, Any]) -> ImageRequest:
        """Every default filled in: the model's steps and guidance (from its store metadata), a drawn seed."""
        update = {}
        if self.steps is None:
            update["steps"] = int(model_defaults["default_steps"])
        if self.guidance_scale is None:
            update["guidance_scale"] = float(model_defaults["default_guidance_scale"])
        return self.model_copy(update=update).drawn_seed()

    def series(self, count: int) -> list[ImageRequest]:
        """The `count` images of this request, seeds s, s+1, …: each its own request, so each has its own key
        and a later single request for image i (seed s+i) is a cache hit. Draws s when there is none."""
        first = self
        if self.seed is None:
            first = self.model_copy(update={"seed": secrets.randbelow(MAX_SEED - count + 1)})
        if first.seed + count > MAX_SEED:
            limit = MAX_SEED - count + 1
            raise InvalidInput(f"seed: image i of {count} has seed + i, so the seed must be below {limit}")
        return [first.model_copy(update={"seed": first.seed + index}) for index in range(count)]

    def pipeline_arguments(self) -> dict[str, Any]:
        """The diffusers pipeline's keyword arguments for this (resolved) request, the generator aside."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt or None,
            "width": self.width,
            "height": self.height,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
        }

    def content_key(self, model_version: str) -> str:
        """The key of the image this (resolved) request gives: every field changes the pixels or the file."""
        return content_key("images", model_version, self, self.format)


class SpeechRequest(Request):
    text: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(screened)
    ] = Field(
        description="What to say (1 to 2000 characters); long text is split at sentence ends and joined.",
        examples=["Hello there. This is genmedia."],
    )
    voice: VoiceName | None = Field(
        None, description="A named voice (`GET /voices` lists them), instead of a `description`.", examples=["alloy"]
    )
    description: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(screened)]
        | None
    ) = Field(
        None,
        description="The voice, described in plain words (at most 500 characters); default: a neutral clear voice.",
        examples=["A warm female voice speaks slowly and clearly."],
    )
    format: AudioFormat = Field("wav", description="File format of the audio.")
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = Field(
        1.0, description="Speaking rate, 0.25 to 4: 2 is twice as fast; the pitch is kept."
    )
    seed: Seed | None = Field(
        None,
        description="Random seed, 0 ≤ seed < 2³². The same seeded request gives the same audio, answered from "
        "storage; without one a seed is drawn.",
        examples=[7],
    )

    @field_validator("description")
    @classmethod
    def one_voice(cls, description: str | None, info: ValidationInfo) -> str | None:
        if description is not None and info.data.get("voice") is not None:
            raise PydanticCustomError("voice_and_description", "give a named voice or a description, not both")
        return description

    def resolved(self, model_defaults: Mapping[str, Any] | None = None) -> SpeechRequest:
        """Every default filled in: the description (the named voice's, or the neutral one), a drawn seed."""
        description = VOICES[self.voice] if self.voice is not None else self.description or DEFAULT_VOICE
        return self.model_copy(update={"description": description}).drawn_seed()

    def content_key(self, model_version: str) -> str:
        """The key of the audio this (resolved) request gives: the voice counts by its description only, so a
        name and the description it stands for share their outputs."""
        return content_key("audio", model_version, self, self.format, exclude={"voice"})


class ImageResult(BaseModel):
    file_key: str = Field(description="The image's key in storage (content-addressed).")
    public_url: str = Field(description="Where the image can be downloaded.")
    seed: int = Field(description="The seed used: send it again to get the same image.")
    width: int
    height: int
    format: ImageFormat
    model: str = Field(description="The model version that made it (its model-store tag).")
    cached: bool = Field(description="True when answered from storage without generating.")

    @classmethod
    def stored(cls, image: ImageRequest, file_key: str, public_url: str, model: str) -> ImageResult:
        """The answer for the image `image` asks for, as stored under `file_key` (`cached` until made now)."""
        return cls(
            file_key=file_key,
            public_url=public_url,
            seed=image.seed,
            width=image.width,
            height=image.height,
            format=image.format,
            model=model,
            cached=True,
        )


class SpeechResult(BaseModel):
    file_key: str = Field(description="The audio's key in storage (content-addressed).")
    public_url: str = Field(description="Where the audio can be downloaded.")
    sample_rate: int = Field(description="Samples per second.")
    duration_s: float = Field(description="Length of the audio in seconds.")
    format: AudioFormat
    model: str = Field(description="The model version that made it (its model-store tag).")
    cached: bool = Field(description="True when answered from storage without generating.")


class CaptionResult(BaseModel):
    caption: str = Field(description="One sentence describing the image.")
    model: str = Field(description="The model version that wrote it (its model-store tag).")


def content_key(
    prefix: str, model_version: str, request: Request, extension: str, exclude: frozenset[str] | set[str] = frozenset()
) -> str:
    """A storage key that names its content: the same model version and request give the same key.

    The request is hashed as canonical JSON, so any text (newlines, slashes, header-like strings) in a
    prompt can only change the hash, never the shape of the key. The request must be resolved: a default
    left to the model would make two different outputs share a key.
    """
    params = request.model_dump(exclude=exclude)
    if None in params.values():
        raise ValueError(f"content_key needs a resolved request, got {params}")
    canonical = json.dumps({"model": model_version, **params}, sort_keys=True, ensure_ascii=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{prefix}/{digest}.{extension}"

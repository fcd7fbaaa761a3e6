"""What a valid request and a result look like, defined once for the gateway and every model service.

The bounds live in the types (`Annotated[...]`), so they appear in each route's signature, in the OpenAPI
spec and in the generated client, and the gateway refuses exactly what the services would refuse.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le, Lt, MultipleOf
from pydantic import AfterValidator, BaseModel, StringConstraints

from genmedia.contract.screening import screened

MAX_SEED = 2**32

# Text that steers a model is screened for blocked terms (genmedia.contract.screening); a negative prompt is not:
# naming what to avoid is what it is for.
Prompt = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000), AfterValidator(screened)
]
NegativePrompt = Annotated[str, StringConstraints(max_length=1000)]
ImageSide = Annotated[int, Ge(64), Le(1536), MultipleOf(8)]
Steps = Annotated[int, Ge(1), Le(100)]
GuidanceScale = Annotated[float, Ge(0), Le(20)]
Seed = Annotated[int, Ge(0), Lt(MAX_SEED)]
ImageFormat = Literal["png", "webp", "jpeg"]

SpeechText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(screened)
]
VoiceDescription = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(screened)
]
AudioFormat = Literal["wav", "flac", "ogg"]

DEFAULT_IMAGE_SIDE = 512
DEFAULT_VOICE = (
    "A clear, neutral voice speaks at a moderate pace in a quiet room, with very clear audio and no background noise."
)

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
}


class ImageResult(BaseModel):
    file_key: str
    public_url: str
    seed: int
    width: int
    height: int
    format: ImageFormat
    model: str
    cached: bool


class SpeechResult(BaseModel):
    file_key: str
    public_url: str
    sample_rate: int
    duration_s: float
    format: AudioFormat
    model: str
    cached: bool


class CaptionResult(BaseModel):
    caption: str
    model: str


def content_key(prefix: str, model_version: str, params: Mapping[str, Any], extension: str) -> str:
    """A storage key that names its content: the same model version and parameters give the same key.

    The parameters are hashed as canonical JSON, so any text (newlines, slashes, header-like strings) in a
    prompt can only change the hash, never the shape of the key.
    """
    canonical = json.dumps({"model": model_version, **params}, sort_keys=True, ensure_ascii=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{prefix}/{digest}.{extension}"


def image_key(
    model_version: str,
    *,
    prompt: str,
    negative_prompt: str | None,
    width: int,
    height: int,
    steps: int,
    guidance_scale: float,
    seed: int,
    format: str,
) -> str:
    """The key of the image these arguments give: every argument that changes the pixels is hashed."""
    params = {
        "prompt": prompt,
        "negative_prompt": negative_prompt or "",
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": float(guidance_scale),
        "seed": seed,
        "format": format,
    }
    return content_key("images", model_version, params, format)


def speech_key(model_version: str, *, text: str, description: str, seed: int, format: str) -> str:
    """The key of the audio these arguments give."""
    params = {"text": text, "description": description, "seed": seed, "format": format}
    return content_key("audio", model_version, params, format)

"""Python client for the genmedia gateway.

    from genmedia_client import Genmedia

    client = Genmedia("http://127.0.0.1:3000", api_key=None)
    print(client.generate_image(prompt="a lighthouse at dawn").public_url)

`Genmedia` (`gateway.py`, written by hand) covers the common case; `genmedia_client.generated` is the full
client generated from the gateway's OpenAPI spec by `make client` (every route, including task retry/cancel).
"""

from .gateway import DEFAULT_TIMEOUT_S, Genmedia, GenmediaError, Job
from .generated.models import CaptionResult, ImageResult, SpeechResult, TaskStatus

__all__ = (
    "DEFAULT_TIMEOUT_S",
    "CaptionResult",
    "Genmedia",
    "GenmediaError",
    "ImageResult",
    "Job",
    "SpeechResult",
    "TaskStatus",
)

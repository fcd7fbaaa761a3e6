"""Python client for the genmedia gateway.

    from genmedia_client import Genmedia

    client = Genmedia("http://127.0.0.1:3000", api_key=None)
    print(client.generate_image(prompt="a lighthouse at dawn").public_url)
    job = client.submit_image_job(prompt="a lighthouse at dawn", webhook="https://example.com/hooks/genmedia")
    print(job.wait().public_url)

`Genmedia` (`gateway.py`), `Job` (`jobs.py`) and `verify_webhook` (`webhooks.py`) are written by hand and cover
the common case; `genmedia_client.generated` is the full client generated from the gateway's OpenAPI spec by
`make client` (every route).
"""

from .gateway import DEFAULT_TIMEOUT_S, Genmedia
from .generated.models import CaptionResult
from .jobs import Job
from .results import GenmediaError, ImageResult, SpeechResult
from .webhooks import WebhookEvent, WebhookVerificationError, verify_webhook

__all__ = (
    "DEFAULT_TIMEOUT_S",
    "CaptionResult",
    "Genmedia",
    "GenmediaError",
    "ImageResult",
    "Job",
    "SpeechResult",
    "WebhookEvent",
    "WebhookVerificationError",
    "verify_webhook",
)

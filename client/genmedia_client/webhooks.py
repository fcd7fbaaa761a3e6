"""Check a webhook the gateway sent: `verify_webhook(body, headers, secret)` → the event, or an exception.

Written by hand, and never touched by `make client`. The gateway signs per Standard Webhooks (HMAC-SHA256 of
`webhook-id.webhook-timestamp.body` with WEBHOOK_SECRET); `standardwebhooks` checks the signature and that
the timestamp is within five minutes, so a captured request cannot be replayed later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = ("WebhookEvent", "WebhookVerificationError", "verify_webhook")


@dataclass(frozen=True)
class WebhookEvent:
    id: str  # the `webhook-id`, the same on every retry: a receiver that saw it already can drop it
    type: str  # job.started, job.progress or job.completed
    timestamp: str
    job: dict[str, Any]  # the job as GET /jobs/{id} answers it


def verify_webhook(body: bytes | str, headers: Mapping[str, str], secret: str) -> WebhookEvent:
    """The event of a webhook request, given its raw body (the bytes as received, before any JSON parsing),
    its headers and WEBHOOK_SECRET (`whsec_…`); `WebhookVerificationError` if it was not signed with it."""
    headers = {name.lower(): value for name, value in headers.items()}
    event = Webhook(secret).verify(body, headers)
    return WebhookEvent(headers["webhook-id"], event["type"], event["timestamp"], event["data"])

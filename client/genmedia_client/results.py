"""What the gateway answers, as the client hands it back: results named as the API names them, and errors.

Written by hand, and never touched by `make client`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx

from .generated.models import ImageResult as GeneratedImageResult
from .generated.models import SpeechResult as GeneratedSpeechResult


class GenmediaError(Exception):
    """The gateway refused or failed a request: `status`, its `message`, and `retry_after` seconds (429, 503).

    A gateway that cannot be reached (connection refused, timed out) is a 503 with no `retry_after`.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class ImageResult(GeneratedImageResult):
    """`POST /generate_image`'s answer; `format` is the API's field (the generated model says `format_`)."""

    @property
    def format(self) -> str:
        return self.format_.value


class SpeechResult(GeneratedSpeechResult):
    """`POST /synthesize_speech`'s answer; `format` is the API's field (the generated model says `format_`)."""

    @property
    def format(self) -> str:
        return self.format_.value


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The `Retry-After` seconds of an answer; None without one (the gateway never sends an HTTP date)."""
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def error_from(status: int, content: bytes, headers: Mapping[str, str]) -> GenmediaError:
    """The gateway's `{"error": ...}` answer as a `GenmediaError` (any other body quoted, shortened)."""
    try:
        message = json.loads(content)["error"]
        if not isinstance(message, str):
            raise TypeError(message)
    except (ValueError, KeyError, TypeError):
        message = content.decode(errors="replace")[:500] or httpx.codes.get_reason_phrase(status)
    return GenmediaError(status, message, retry_after_s(headers))

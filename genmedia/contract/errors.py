"""Errors as the contract shapes them: one JSON object `{"error": "..."}` with the right status, never a trace.

Two mechanisms, one shape:
- `answers_errors` wraps a `@bentoml.api` method and turns the errors our code raises into a JSON response
  (a method may return a starlette `Response`; BentoML then sends it as it is).
- `ErrorBodyMiddleware` rewrites the bodies BentoML writes itself before our code runs: pydantic failures
  ("1 validation error for Input", the field only in `detail`) and its list-shaped `[{"error": ...}]`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from starlette.responses import JSONResponse

from genmedia import logger
from genmedia.outputs import OutputWithheld
from genmedia.outputs.storage import InvalidKey, StorageUnavailable

STORAGE_RETRY_AFTER_S = 10
WITHHELD_MESSAGE = "The generated image was withheld by the safety checker; try another prompt or seed."


class ServiceError(Exception):
    """An error the client can act on: `status` and a message that says what to fix or when to retry."""

    status = 500

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.retry_after = retry_after
        self.headers = headers or {}


class InvalidInput(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class Withheld(ServiceError):
    """An output the safety checker flagged: nothing is returned or stored but a marker."""

    status = 422


class RateLimited(ServiceError):
    status = 429


class Unavailable(ServiceError):
    status = 503


def error_response(status: int, message: str, retry_after: int | None = None, headers=None) -> JSONResponse:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def as_service_error(error: Exception) -> ServiceError | None:
    """The client-facing form of an error raised below a route, or None for a bug (answered as 500)."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, StorageUnavailable):
        return Unavailable(
            f"{error} The result is kept and will be stored on retry.", retry_after=STORAGE_RETRY_AFTER_S
        )
    if isinstance(error, InvalidKey):
        return InvalidInput(str(error))
    if isinstance(error, OutputWithheld):
        return Withheld(WITHHELD_MESSAGE)
    return None


P = ParamSpec("P")
R = TypeVar("R")


def answers_errors(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | JSONResponse]]:
    """Decorate an async API method so our errors become `{"error": ...}` responses with their status."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        try:
            return await method(*args, **kwargs)
        except Exception as error:
            known = as_service_error(error)
            if known is None:
                logger.exception("%s failed", method.__name__)
                return error_response(500, "An unexpected error occurred; it has been logged.")
            if known.status >= 500:
                logger.warning("%s answered %s: %s", method.__name__, known.status, known.message)
            return error_response(known.status, known.message, known.retry_after, known.headers)

    return wrapper


def validation_message(body: Any) -> str | None:
    """A message naming each invalid field, from BentoML's pydantic error body; None if not one."""
    if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        return None
    details = body.get("detail")
    if isinstance(details, list) and details:
        parts = []
        for detail in details:
            field = ".".join(str(part) for part in detail.get("loc", ()) if part not in ("body",)) or "body"
            parts.append(f"{field}: {detail.get('msg', 'invalid value')}")
        return "; ".join(parts)
    error = body.get("error")
    return error if isinstance(error, str) else None


class ErrorBodyMiddleware:
    """ASGI middleware: every JSON error body BentoML writes becomes `{"error": "<field>: <what is wrong>"}`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def rewrite(message):
            nonlocal start
            if message["type"] == "http.response.start":
                is_json = any(
                    name.lower() == b"content-type" and value.startswith(b"application/json")
                    for name, value in message.get("headers", [])
                )
                if message["status"] >= 400 and is_json:
                    start = message
                    return
                return await send(message)
            if start is None:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            try:
                rewritten = validation_message(json.loads(body))
            except ValueError:
                rewritten = None
            if rewritten is not None:
                body = json.dumps({"error": rewritten}).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)

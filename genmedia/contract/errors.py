"""Errors as the contract shapes them: one JSON object `{"error": "..."}` with the right status, never a trace.

Three mechanisms, one shape:
- `answers_errors` wraps a `@bentoml.api` method and turns the errors our code raises into a JSON response
  (a method may return a starlette `Response`; BentoML then sends it as it is).
- `ErrorBodyMiddleware` rewrites the bodies BentoML and Starlette write themselves before our code runs:
  pydantic failures ("1 validation error for Input", the field only in `detail`), the list-shaped
  `[{"error": ...}]`, and the plain-text "Not Found" of an unknown route.
- `ClientErrorLogFilter` turns BentoML's "Exception on <path>" error-with-traceback for a client's 4xx into one
  warning line without the input (a user's prompt does not belong in the server log).

The Retry-After advice of every 503 the services give lives here too, so the waits are set in one place.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
from starlette.responses import JSONResponse

from genmedia import logger

# Seconds a client is told to wait (Retry-After) before retrying, by cause.
BACKEND_RETRY_AFTER_S = 30  # a model service down, starting or too slow
BUSY_RETRY_AFTER_S = 5  # a queue or the gateway's capacity full: a short wait
CAPTION_BUSY_RETRY_AFTER_S = 10  # the captioner could not fit a request in its batch latency budget
STORAGE_RETRY_AFTER_S = 10  # storage down; the output is spooled meanwhile


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


class UnsupportedMediaType(ServiceError):
    status = 415


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class Withheld(ServiceError):
    """An output the safety checker flagged: nothing is returned or stored but its marker."""

    status = 422

    def __init__(
        self, message: str = "The generated image was withheld by the safety checker; try another prompt or seed."
    ):
        super().__init__(message)


class RateLimited(ServiceError):
    status = 429


class Unavailable(ServiceError):
    status = 503


def error_response(status: int, message: str, retry_after: int | None = None, headers=None) -> JSONResponse:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


P = ParamSpec("P")
R = TypeVar("R")


def answers_errors(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | JSONResponse]]:
    """Decorate an async API method so our errors become `{"error": ...}` responses with their status."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        try:
            return await method(*args, **kwargs)
        except ServiceError as known:
            if known.status >= 500:
                logger.warning("%s answered %s: %s", method.__name__, known.status, known.message)
            return error_response(known.status, known.message, known.retry_after, known.headers)
        except Exception:
            logger.exception("%s failed", method.__name__)
            return error_response(500, "An unexpected error occurred; it has been logged.")

    return wrapper


# Pydantic's wording where it does not say what to do.
FIELD_PROBLEMS = {
    "missing": "required; this field has no default",
    "extra_forbidden": "unknown field; this route's fields are listed at /docs",
    "json_invalid": "not valid JSON; send a JSON object",
}


def plain_error_message(scope, status: int, text: str) -> str:
    """The `error` message for a non-JSON error body (Starlette's own "Not Found" and the like)."""
    if status == 404:
        return f"No route {scope['method']} {scope['path']}; the routes are listed at /docs."
    if status == 405:
        return f"{scope['method']} is not allowed on {scope['path']}; the routes are listed at /docs."
    return text.strip() or f"The request failed with status {status}."


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
            parts.append(f"{field}: {FIELD_PROBLEMS.get(detail.get('type'), detail.get('msg', 'invalid value'))}")
        return "; ".join(parts)
    error = body.get("error")
    return error if isinstance(error, str) else None


class ErrorBodyMiddleware:
    """ASGI middleware: every error body becomes `{"error": "<field>: <what is wrong>"}`, JSON or not."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start: dict | None = None
        is_json = False
        chunks: list[bytes] = []

        async def rewrite(message):
            nonlocal start, is_json
            if message["type"] == "http.response.start":
                content_type = next(
                    (value for name, value in message.get("headers", []) if name.lower() == b"content-type"), b""
                )
                is_json = content_type.startswith(b"application/json")
                # Error pages of ours (the OpenAPI UI, the playground) are HTML and stay as they are.
                if message["status"] >= 400 and not content_type.startswith(b"text/html"):
                    start = message
                    return
                return await send(message)
            if start is None:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if is_json:
                try:
                    rewritten = validation_message(json.loads(body))
                except ValueError:
                    rewritten = None
            else:
                rewritten = plain_error_message(scope, start["status"], body.decode("utf-8", "replace"))
            if rewritten is not None:
                body = json.dumps({"error": rewritten}).encode()
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
            ]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


class ClientErrorLogFilter(logging.Filter):
    """BentoML logs every refused request as "Exception on <path>" with a traceback that quotes the input.

    For a client's mistake (a validation error, a 4xx) that is one warning line naming the fields, never the
    values; real errors (5xx, bugs) keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not (isinstance(record.msg, str) and record.msg.startswith("Exception on ") and error is not None):
            return True
        if isinstance(error, ValidationError):
            fields = sorted({".".join(str(part) for part in detail["loc"]) or "body" for detail in error.errors()})
            problem = f"invalid input in {', '.join(fields)}"
        elif isinstance(error, BentoMLException) and int(error.error_code) < 500:
            problem = f"client error {int(error.error_code)}"
        else:
            return True
        record.msg = f"Refused %s [%s]: {problem}"
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


def install_client_error_log_filter() -> None:
    """Attach the filter to the logger BentoML's HTTP apps log through (idempotent)."""
    bentoml_http_logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(existing, ClientErrorLogFilter) for existing in bentoml_http_logger.filters):
        bentoml_http_logger.addFilter(ClientErrorLogFilter())

"""`Genmedia`: the gateway's routes as one method each, over the generated client (`genmedia_client.generated`).

Written by hand, and never touched by `make client`. The generated functions are complete but awkward for the
common case: each returns a union of the result and an error model, its HTTP timeout is httpx's 5 s (a model
service's cold start takes minutes), and a refused connection is a raw `httpx.ConnectError`. Here a call
returns its result or raises `GenmediaError`, waits longer than the gateway itself does, retries a 429 or 503
after its `Retry-After` (a few times, briefly; `retries=0` turns it off), and names fields as the API does
(`format`, not the generated models' `format_`). Durable jobs are `jobs.Job`.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, TypeVar

import httpx

from .generated import AuthenticatedClient, Client
from .generated.api.gateway import caption_image, generate_image, synthesize_speech
from .generated.models import (
    CaptionImageRequest,
    CaptionResult,
    Error,
    GenerateImageRequest,
    GenerateImageRequestFormat,
    SynthesizeSpeechRequest,
    SynthesizeSpeechRequestFormat,
)
from .generated.types import File
from .jobs import Job
from .results import GenmediaError, ImageResult, SpeechResult, error_from, retry_after_s

# Longer than the gateway's own limit (660 s served locally, 960 s on BentoCloud: deploy/), which covers a
# model service's cold start, so a slow answer ends as the gateway's 503 + Retry-After, not a client timeout.
DEFAULT_TIMEOUT_S = 1000.0
DEFAULT_RETRIES = 2  # retries of a 429/503 after its Retry-After
DEFAULT_MAX_RETRY_WAIT_S = 60.0  # a longer Retry-After is not waited for: the error is raised with it
RETRIED_STATUSES = (429, 503)
WithStatus = TypeVar("WithStatus")


def request_body(model: type, format_type: type, fields: dict[str, Any]) -> Any:
    """A generated request model from keyword arguments named as in the API (`format`, not `format_`)."""
    fields = dict(fields)
    if "format" in fields:
        fields["format_"] = format_type(fields.pop("format"))
    return model(**fields)


class Genmedia:
    """The genmedia gateway at `base_url`; `api_key` when the gateway has GATEWAY_API_KEYS set.

    >>> client = Genmedia("http://127.0.0.1:3000")
    >>> client.generate_image(prompt="a lighthouse at dawn").public_url
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S,
        httpx_args: dict[str, Any] | None = None,
    ) -> None:
        """`retries`: how often a 429/503 is retried after its Retry-After (0: never), when that wait is at most
        `max_retry_wait_s`. `httpx_args` go to the `httpx.Client` (proxies, certificates, a transport)."""
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.max_retry_wait_s = max_retry_wait_s
        options: dict[str, Any] = {"base_url": self.base_url, "timeout": httpx.Timeout(timeout_s)}
        options["httpx_args"] = httpx_args or {}
        if api_key:
            self.api: Client | AuthenticatedClient = AuthenticatedClient(token=api_key, **options)
        else:
            self.api = Client(**options)

    @property
    def http(self) -> httpx.Client:
        """The `httpx.Client` every call goes through (the key, the timeout, `httpx_args`)."""
        return self.api.get_httpx_client()

    def call(self, send: Callable[[], WithStatus]) -> WithStatus:
        """`send()` (one HTTP exchange), retried after Retry-After on 429/503; a transport error is a 503."""
        for attempt in range(self.retries + 1):
            try:
                response = send()
            except httpx.TransportError as error:
                raise GenmediaError(503, f"could not reach the gateway at {self.base_url}: {error!r}") from error
            wait = retry_after_s(response.headers)
            if response.status_code not in RETRIED_STATUSES or attempt == self.retries:
                return response
            if wait is None or wait > self.max_retry_wait_s:
                return response
            if isinstance(response, httpx.Response):
                response.close()  # a streamed answer holds its connection until closed
            time.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns on its last attempt

    def answer(self, send: Callable[[], Any], result_type: type | None = None) -> Any:
        """The parsed 2xx answer of `send()` (converted to `result_type`), else the error as `GenmediaError`."""
        response = self.call(send)
        if 200 <= response.status_code < 300 and not isinstance(response.parsed, Error):
            if result_type is not None:
                return result_type.from_dict(response.parsed.to_dict())
            return response.parsed
        raise error_from(int(response.status_code), response.content, response.headers)

    def request_json(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        """A route the generated client does not wrap usefully: its JSON answer, or `GenmediaError`."""
        response = self.call(lambda: self.http.request(method, path, **options))
        if not 200 <= response.status_code < 300:
            raise error_from(response.status_code, response.content, response.headers)
        return response.json()

    def generate_image(self, prompt: str, **options: Any) -> ImageResult:
        """`POST /generate_image`; options as in the API: negative_prompt, width, height, steps, seed, format..."""
        body = request_body(GenerateImageRequest, GenerateImageRequestFormat, {"prompt": prompt, **options})
        return self.answer(lambda: generate_image.sync_detailed(client=self.api, body=body), ImageResult)

    def synthesize_speech(self, text: str, **options: Any) -> SpeechResult:
        """`POST /synthesize_speech`; options: voice (a name from `GET /voices`) or description, format, speed, seed."""
        body = request_body(SynthesizeSpeechRequest, SynthesizeSpeechRequestFormat, {"text": text, **options})
        return self.answer(lambda: synthesize_speech.sync_detailed(client=self.api, body=body), SpeechResult)

    def caption_image(self, image: bytes | str | os.PathLike[str] | BinaryIO) -> CaptionResult:
        """`POST /caption_image` with a PNG, JPEG or WebP image: its bytes, a path, or an open binary file."""
        if isinstance(image, bytes):
            content, name = image, "image"
        elif isinstance(image, str | os.PathLike):
            with open(image, "rb") as file:
                content, name = file.read(), os.path.basename(image)
        else:
            content, name = image.read(), os.path.basename(getattr(image, "name", "image"))

        def send():
            # A fresh file object per try: a retry sends the whole image again.
            body = CaptionImageRequest(image=File(payload=io.BytesIO(content), file_name=name))
            return caption_image.sync_detailed(client=self.api, body=body)

        return self.answer(send)

    def submit_image_job(
        self,
        prompt: str,
        *,
        webhook: str | None = None,
        webhook_events: Iterable[str] | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        """`POST /jobs/generate_image`: the queued `Job`; `.wait()` gives its `ImageResult`.

        `webhook`: an https URL the gateway POSTs signed events to (`webhook_events`: `started`, `progress`,
        `completed`; default `completed`); check them with `verify_webhook`. `idempotency_key` (default: a new
        one per call, so this call's own retries never make a second job) makes a repeat return the same job.
        """
        body = request_body(GenerateImageRequest, GenerateImageRequestFormat, {"prompt": prompt, **options})
        return self.submit_job("generate_image", body.to_dict(), webhook, webhook_events, idempotency_key)

    def submit_speech_job(
        self,
        text: str,
        *,
        webhook: str | None = None,
        webhook_events: Iterable[str] | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        """`POST /jobs/synthesize_speech`: the queued `Job`; `.wait()` gives its `SpeechResult` (options as
        `synthesize_speech`, webhook and idempotency as `submit_image_job`)."""
        body = request_body(SynthesizeSpeechRequest, SynthesizeSpeechRequestFormat, {"text": text, **options})
        return self.submit_job("synthesize_speech", body.to_dict(), webhook, webhook_events, idempotency_key)

    def submit_job(
        self,
        kind: str,
        body: dict[str, Any],
        webhook: str | None,
        webhook_events: Iterable[str] | None,
        idempotency_key: str | None,
    ) -> Job:
        if webhook is not None:
            body["webhook"] = webhook
        if webhook_events is not None:
            body["webhook_events"] = list(webhook_events)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        submitted = self.request_json("POST", f"/jobs/{kind}", json=body, headers=headers)
        return Job(self, submitted)

    def job(self, job_id: str) -> Job:
        """`GET /jobs/{id}`: a job submitted earlier (by this API key), as it is now."""
        return Job(self, {"id": job_id}).refresh()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Genmedia:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""`Genmedia`: the gateway's routes as one method each, over the generated client (`genmedia_client.generated`).

Written by hand, and never touched by `make client`. The generated functions are complete but awkward for the
common case: each returns a union of the result and an error model, its HTTP timeout is httpx's 5 s (a model
service's cold start takes minutes), and an async job is three routes to call in a loop. Here a call returns
its result or raises `GenmediaError`, waits longer than the gateway itself does, and `Job.wait()` polls a job
to its end. Everything else (task retry and cancel, `/readyz`) is in `genmedia_client.generated.api`.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

import httpx

from .generated import AuthenticatedClient, Client
from .generated.api.gateway import (
    caption_image,
    generate_image,
    generate_image_async_result,
    generate_image_async_status,
    generate_image_async_submit,
    synthesize_speech,
    synthesize_speech_async_result,
    synthesize_speech_async_status,
    synthesize_speech_async_submit,
)
from .generated.models import (
    CaptionImageRequest,
    CaptionResult,
    Error,
    GenerateImageRequest,
    GenerateImageRequestFormat,
    ImageResult,
    SpeechResult,
    SynthesizeSpeechRequest,
    SynthesizeSpeechRequestFormat,
    SynthesizeSpeechRequestVoice,
    TaskStatus,
    TaskStatusResponse,
    TaskSubmitted,
)
from .generated.types import File, Response

# Longer than the gateway's own limit (660 s served locally, 960 s on BentoCloud: deploy/), which covers a
# model service's cold start, so a slow answer ends as the gateway's 503 + Retry-After, not a client timeout.
DEFAULT_TIMEOUT_S = 1000.0


class GenmediaError(Exception):
    """The gateway refused or failed a request: `status`, its `message`, and `retry_after` seconds (429, 503)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


def answer(response: Response[Any]) -> Any:
    """The parsed result of a 200, else the gateway's error as `GenmediaError`."""
    if response.status_code == 200 and response.parsed is not None and not isinstance(response.parsed, Error):
        return response.parsed
    if isinstance(response.parsed, Error):
        message = response.parsed.error
    else:
        message = response.content.decode(errors="replace")[:500] or response.status_code.phrase
    retry_after = response.headers.get("retry-after")
    raise GenmediaError(int(response.status_code), message, float(retry_after) if retry_after else None)


def request_body(model: type, format_type: type, fields: dict[str, Any]) -> Any:
    """A generated request model from keyword arguments named as in the API (`format`, not `format_`), with
    plain strings for the enumerated fields."""
    fields = dict(fields)
    if "format" in fields:
        fields["format_"] = format_type(fields.pop("format"))
    if "voice" in fields:
        fields["voice"] = SynthesizeSpeechRequestVoice(fields["voice"])
    return model(**fields)


@dataclass
class Job:
    """An async job on the gateway: `status()` now, `result()` once completed, or `wait()` for both."""

    task_id: str
    gateway: Genmedia
    status_route: Any
    result_route: Any

    def status(self) -> TaskStatus:
        response: TaskStatusResponse = answer(
            self.status_route.sync_detailed(client=self.gateway.api, task_id=self.task_id)
        )
        return response.status

    def result(self) -> Any:
        """The job's result; `GenmediaError` with the gateway's error if the job failed."""
        return answer(self.result_route.sync_detailed(client=self.gateway.api, task_id=self.task_id))

    def wait(self, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 1.0) -> Any:
        """Poll until the job ends; its result, or `GenmediaError` (failed, canceled, or still running)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status()
            if status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
                return self.result()
            if status == TaskStatus.CANCELED:
                raise GenmediaError(409, f"job {self.task_id} was canceled")
            if time.monotonic() >= deadline:
                raise GenmediaError(408, f"job {self.task_id} is still {status.value} after {timeout_s} s")
            time.sleep(poll_s)


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
        httpx_args: dict[str, Any] | None = None,
    ) -> None:
        """`httpx_args` go to the `httpx.Client` (proxies, certificates, a transport)."""
        options: dict[str, Any] = {"base_url": base_url, "timeout": httpx.Timeout(timeout_s)}
        options["httpx_args"] = httpx_args or {}
        if api_key:
            self.api: Client | AuthenticatedClient = AuthenticatedClient(token=api_key, **options)
        else:
            self.api = Client(**options)

    def generate_image(self, prompt: str, **options: Any) -> ImageResult:
        """`POST /generate_image`; options as in the API: negative_prompt, width, height, steps, seed, format..."""
        body = request_body(GenerateImageRequest, GenerateImageRequestFormat, {"prompt": prompt, **options})
        return answer(generate_image.sync_detailed(client=self.api, body=body))

    def synthesize_speech(self, text: str, **options: Any) -> SpeechResult:
        """`POST /synthesize_speech`; options: voice (a name from `GET /voices`) or description, format, speed, seed."""
        body = request_body(SynthesizeSpeechRequest, SynthesizeSpeechRequestFormat, {"text": text, **options})
        return answer(synthesize_speech.sync_detailed(client=self.api, body=body))

    def caption_image(self, image: bytes | str | os.PathLike[str] | BinaryIO) -> CaptionResult:
        """`POST /caption_image` with a PNG, JPEG or WebP image: its bytes, a path, or an open binary file."""
        if isinstance(image, bytes):
            payload, name = io.BytesIO(image), "image"
        elif isinstance(image, str | os.PathLike):
            with open(image, "rb") as file:
                payload, name = io.BytesIO(file.read()), os.path.basename(image)
        else:
            payload, name = image, os.path.basename(getattr(image, "name", "image"))
        body = CaptionImageRequest(image=File(payload=payload, file_name=name))
        return answer(caption_image.sync_detailed(client=self.api, body=body))

    def submit_image_job(self, prompt: str, **options: Any) -> Job:
        """`POST /generate_image_async/submit`: the job; `.wait()` gives its `ImageResult`."""
        body = request_body(GenerateImageRequest, GenerateImageRequestFormat, {"prompt": prompt, **options})
        submitted: TaskSubmitted = answer(generate_image_async_submit.sync_detailed(client=self.api, body=body))
        return Job(submitted.task_id, self, generate_image_async_status, generate_image_async_result)

    def submit_speech_job(self, text: str, **options: Any) -> Job:
        """`POST /synthesize_speech_async/submit`: the job; `.wait()` gives its `SpeechResult`."""
        body = request_body(SynthesizeSpeechRequest, SynthesizeSpeechRequestFormat, {"text": text, **options})
        submitted: TaskSubmitted = answer(synthesize_speech_async_submit.sync_detailed(client=self.api, body=body))
        return Job(submitted.task_id, self, synthesize_speech_async_status, synthesize_speech_async_result)

    def close(self) -> None:
        self.api.get_httpx_client().close()

    def __enter__(self) -> Genmedia:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

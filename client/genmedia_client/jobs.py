"""`Job`: a durable job on the gateway (`POST /jobs/...`): its state, its events, its result, and cancel.

Written by hand, and never touched by `make client`. A job outlives the connection that made it: `wait()`
follows its events (`GET /jobs/{id}/events`, server-sent events) and picks a dropped stream up where it
stopped (`Last-Event-ID`), so a gateway restart or a replica change in between costs nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any

import httpx

from .results import GenmediaError, ImageResult, SpeechResult, error_from

if TYPE_CHECKING:
    from .gateway import Genmedia

FINAL_STATUSES = ("succeeded", "failed", "canceled")
RESULT_TYPES = {"generate_image": ImageResult, "synthesize_speech": SpeechResult}
RECONNECTS = 5  # a stream that drops this many times in a row without an event is given up (503)


class Job:
    """A job as `GET /jobs/{id}` last answered: `id`, `kind`, `status` (`queued`, `running`, `succeeded`,
    `failed`, `canceled`), `progress` (0–1), `queue_position`, `created_at`, `started_at`, `finished_at`,
    `result` (an `ImageResult` or `SpeechResult` once succeeded), `error` (`{"status", "message"}`), and
    `data`, the whole answer."""

    def __init__(self, gateway: Genmedia, data: dict[str, Any]) -> None:
        self.gateway = gateway
        self.data: dict[str, Any] = {}
        self.update(data)

    def update(self, data: dict[str, Any]) -> Job:
        self.data = {**self.data, **data}
        self.id: str = self.data["id"]
        self.kind: str | None = self.data.get("kind")
        self.status: str | None = self.data.get("status")
        self.progress: float | None = self.data.get("progress")
        self.queue_position: int | None = self.data.get("queue_position")
        self.created_at: str | None = self.data.get("created_at")
        self.started_at: str | None = self.data.get("started_at")
        self.finished_at: str | None = self.data.get("finished_at")
        self.error: dict[str, Any] | None = self.data.get("error")
        result = self.data.get("result")
        self.result = RESULT_TYPES[self.kind].from_dict(result) if result and self.kind in RESULT_TYPES else result
        return self

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def refresh(self) -> Job:
        """`GET /jobs/{id}`: the job as it is now."""
        return self.update(self.gateway.request_json("GET", f"/jobs/{self.id}"))

    def cancel(self) -> Job:
        """`POST /jobs/{id}/cancel`: the job, `canceled`; `GenmediaError` 409 when it had already finished."""
        return self.update(self.gateway.request_json("POST", f"/jobs/{self.id}/cancel"))

    def events(self, timeout_s: float | None = None) -> Iterator[Job]:
        """The job at each change of status or progress, first as it is now; ends after a final status.

        A stream that drops is resumed where it stopped. `timeout_s`: `GenmediaError` 408 once that long has
        passed without a final status (default: no limit beyond the client's read timeout).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last_event_id: str | None = None
        drops = 0
        while True:
            try:
                response = self.open_events(last_event_id, deadline)
            except GenmediaError as error:
                if not isinstance(error.__cause__, httpx.TransportError):
                    raise
                response = None  # unreachable, or no answer in time: try again below
            if response is not None:
                with closing(response):
                    if response.status_code != 200:
                        raise error_from(response.status_code, response.read(), response.headers)
                    try:
                        for event_id, data in server_sent_events(response.iter_lines()):
                            drops = 0
                            last_event_id = event_id or last_event_id
                            yield self.update(json.loads(data))
                            if self.finished:
                                return
                    except httpx.TransportError:
                        pass  # the stream broke (a restart, a proxy's idle timeout): resume it below
            drops += 1
            if deadline is not None and time.monotonic() >= deadline:
                raise GenmediaError(408, f"job {self.id} is still {self.status} after {timeout_s} s")
            if drops > RECONNECTS:
                raise GenmediaError(503, f"the event stream of job {self.id} dropped {drops} times in a row")
            time.sleep(min(0.5 * 2**drops, 10))

    def open_events(self, last_event_id: str | None, deadline: float | None) -> httpx.Response:
        """`GET /jobs/{id}/events`, from after `last_event_id`; no read outlasts the deadline."""
        http = self.gateway.http
        headers = {"accept": "text/event-stream"}
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        timeout = http.timeout
        if deadline is not None:
            timeout = httpx.Timeout(timeout.connect, read=max(deadline - time.monotonic(), 0.001))
        request = http.build_request("GET", f"/jobs/{self.id}/events", headers=headers, timeout=timeout)
        return self.gateway.call(lambda: http.send(request, stream=True))

    def wait(self, timeout_s: float | None = None) -> ImageResult | SpeechResult:
        """The job's result once it succeeded; `GenmediaError` with its error if it failed, 409 if canceled,
        408 if it has not finished within `timeout_s`."""
        if not self.finished:
            for _ in self.events(timeout_s):
                pass
        if self.status == "succeeded":
            return self.result
        if self.status == "canceled":
            raise GenmediaError(409, f"job {self.id} was canceled")
        error = self.error or {}
        raise GenmediaError(int(error.get("status") or 500), error.get("message") or f"job {self.id} failed")

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, kind={self.kind!r}, status={self.status!r}, progress={self.progress!r})"


def server_sent_events(lines: Iterator[str]) -> Iterator[tuple[str | None, str]]:
    """(id, data) of each event of a `text/event-stream`; comments (keep-alives) and data-less events skipped."""
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_id, "\n".join(data)
            event_id, data = None, []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    if data:
        yield event_id, "\n".join(data)

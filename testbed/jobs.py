"""A client's side of `/jobs/...` for tests, benchmarks and the soak: submit, poll, and read event streams."""

from __future__ import annotations

import json
import time

import httpx

FINAL_STATUSES = ("succeeded", "failed", "canceled")


def submit(
    url: str,
    kind: str,
    body: dict,
    headers: dict,
    idempotency_key: str | None = None,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """POST the job; through `client` where given (a benchmark's: `httpx.post` builds a client per call)."""
    if idempotency_key is not None:
        headers = {**headers, "Idempotency-Key": idempotency_key}
    return (client or httpx).post(f"{url}/jobs/{kind}", json=body, headers=headers, timeout=60)


def get(url: str, job_id: str, headers: dict) -> httpx.Response:
    return httpx.get(f"{url}/jobs/{job_id}", headers=headers, timeout=60)


def wait_for(url: str, job_id: str, headers: dict, statuses=FINAL_STATUSES, timeout_s: float = 180) -> dict:
    """Poll until the job's status is one of `statuses`; returns the job."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = get(url, job_id, headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} ({job['stage']}) after {timeout_s:.0f} s")
        time.sleep(0.2)


def events(
    url: str,
    job_id: str,
    headers: dict,
    last_event_id: str | None = None,
    timeout_s: float = 180,
    client: httpx.Client | None = None,
):
    """Yield (event id, job) from the job's event stream until the server ends it (through `client`, as above)."""
    if last_event_id is not None:
        headers = {**headers, "Last-Event-ID": last_event_id}
    with (client or httpx).stream("GET", f"{url}/jobs/{job_id}/events", headers=headers, timeout=timeout_s) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id, data = None, []
        for line in response.iter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                yield event_id, json.loads("\n".join(data))
                event_id, data = None, []

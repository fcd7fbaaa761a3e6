"""`/jobs/...`: submit a sync route's request as a durable job, then poll it, stream its events or cancel it.

A Starlette app mounted on the gateway (BentoML API routes take no path parameters), behind the same
access checks as every route; polling and event streams are authenticated but not rate limited
(`services.gateway.access.is_polling`). A job belongs to the API key that made it, known here by the key's
sha256 only: another key gets the same 404 as an unknown id.

The runners that carry the jobs out start with the gateway (`start_job_runners`); the job store is the
database of JOB_STORE_URL, so any replica answers for any job.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json

from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genmedia.contract.errors import InvalidInput, ServiceError, error_response, validation_message
from genmedia.contract.requests import ImageRequest, SpeechRequest
from genmedia.jobs import webhooks
from genmedia.jobs.runner import JobRunner, delete_expired_jobs
from genmedia.jobs.store import (
    DEFAULT_WEBHOOK_EVENTS,
    FINAL_STATUSES,
    MAX_IDEMPOTENCY_KEY_CHARS,
    WEBHOOK_EVENTS,
    JobStore,
)
from genmedia.settings import get_settings
from services.gateway.access import bearer_token

# Each job kind is a sync route, and its request object.
REQUESTS = {"generate_image": ImageRequest, "synthesize_speech": SpeechRequest}
# How often an event stream looks for changes another replica made (this replica's wake it at once).
EVENTS_POLL_S = 0.5
# A comment line this often keeps proxies from closing a quiet stream.
EVENTS_PING_S = 15


@functools.cache
def job_store() -> JobStore:
    """This process's job store, its schema created or migrated on first use (at gateway start)."""
    return JobStore.open(get_settings())


def owner_of(request: Request) -> str:
    """Whose jobs a request sees: the sha256 of its API key (never the key), or "" without one."""
    token = bearer_token(request.headers.get("authorization"))
    return hashlib.sha256(token.encode()).hexdigest() if token else ""


def answered(job: dict, status: int = 200) -> JSONResponse:
    return JSONResponse(job, status_code=status)


async def submit(request: Request) -> Response:
    kind = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "body: not valid JSON; send a JSON object")
    if not isinstance(body, dict):
        return error_response(400, "body: send a JSON object")
    try:
        job, created = await submit_job(kind, body, owner_of(request), request.headers.get("idempotency-key"))
    except ServiceError as error:
        return error_response(error.status, error.message, error.retry_after)
    return answered(
        {**job, "status_url": f"/jobs/{job['id']}", "events_url": f"/jobs/{job['id']}/events"},
        202 if created else 200,
    )


async def submit_job(kind: str, body: dict, owner: str, idempotency_key: str | None) -> tuple[dict, bool]:
    """Check a submit as its sync route would (a 400 makes no job), then store it with its seed drawn."""
    fields = dict(body)
    webhook = fields.pop("webhook", None)
    events = fields.pop("webhook_events", None)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidInput(f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    try:
        parsed = REQUESTS[kind].model_validate(fields)
    except ValidationError as error:
        raise InvalidInput(validation_message({"detail": error.errors()})) from None
    if events is None:
        events = DEFAULT_WEBHOOK_EVENTS
    elif not (isinstance(events, list) and events and set(events) <= set(WEBHOOK_EVENTS)):
        raise InvalidInput(f"webhook_events: a non-empty list of {', '.join(WEBHOOK_EVENTS)}")
    if webhook is not None:
        settings = get_settings()
        if not isinstance(webhook, str):
            raise InvalidInput("webhook: an https URL")
        if not settings.webhook_secret:
            raise InvalidInput("webhook: this gateway sends no webhooks (WEBHOOK_SECRET is not set); poll instead")
        # It resolves the name: blocking work, off the event loop.
        await asyncio.to_thread(webhooks.check_webhook_target, webhook, settings.webhook_allow_private)
    return await job_store().submit(
        kind=kind,
        owner=owner,
        request=parsed.drawn_seed().model_dump(mode="json"),
        submitted=body,
        idempotency_key=idempotency_key,
        webhook=webhook,
        webhook_events=tuple(events),
    )


async def status(request: Request) -> Response:
    job = await job_store().get(request.path_params["job_id"], owner_of(request))
    return answered(job) if job else unknown_job()


async def cancel(request: Request) -> Response:
    try:
        return answered(await job_store().cancel(request.path_params["job_id"], owner_of(request)))
    except ServiceError as error:
        return error_response(error.status, error.message)


async def events(request: Request) -> Response:
    job_id, owner = request.path_params["job_id"], owner_of(request)
    store = job_store()
    found = await store.get_versioned(job_id, owner)
    if found is None:
        return unknown_job()
    last_event_id = request.headers.get("last-event-id", "")
    sent = int(last_event_id) if last_event_id.isdigit() else 0

    async def changes():
        nonlocal found, sent
        while found is not None:
            job, version = found
            if version > sent:
                yield {"id": str(version), "data": json.dumps(job)}
                sent = version
            if job["status"] in FINAL_STATUSES:
                return
            await store.wait_for_change(EVENTS_POLL_S)
            found = await store.get_versioned(job_id, owner)

    return EventSourceResponse(changes(), ping=EVENTS_PING_S, headers={"Cache-Control": "no-store"})


def unknown_job() -> Response:
    return error_response(404, "No job with that id for this API key.")


jobs_app = Starlette(
    routes=[
        Route("/generate_image", submit, methods=["POST"]),
        Route("/synthesize_speech", submit, methods=["POST"]),
        Route("/{job_id}", status, methods=["GET"]),
        Route("/{job_id}/events", events, methods=["GET"]),
        Route("/{job_id}/cancel", cancel, methods=["POST"]),
    ]
)


async def run_jobs(executors: dict) -> None:
    """The gateway's job work, until cancelled: a runner per kind, the retention sweep, the webhook outbox."""
    settings = get_settings()
    store = await asyncio.to_thread(job_store)
    work = [JobRunner(store, kind, execute, settings.job_concurrency).run() for kind, execute in executors.items()]
    work += [delete_expired_jobs(store), webhooks.WebhookSender(store.engine, settings).run()]
    await asyncio.gather(*work)

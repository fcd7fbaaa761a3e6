"""The loop each gateway replica runs per capability: claim a queued job, run it, renew its lease, record it.

At most `JOB_CONCURRENCY` jobs of one capability run at once on a replica, so a burst of submits waits in
the database (with its `queue_position`), never in front of the GPU service. A job runs the same path as its
sync route (`execute`: cache first, then the model service); its seed was drawn at submit, so a job taken
over after a crash is the same request, and an output its first run already stored is found, not made again.

A model service that is unavailable (scaled to zero and starting, busy, restarting) does not fail the job:
it waits `Retry-After` and tries again for up to `UNAVAILABLE_BUDGET_S`, with its stage saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from genmedia import logger
from genmedia.contract.errors import BACKEND_RETRY_AFTER_S, ServiceError
from genmedia.jobs.store import LEASE_S, JobStore

# How often an idle runner looks for jobs another replica queued (its own submits wake it at once).
IDLE_POLL_S = 0.5
# How often finished jobs past JOB_RETENTION_S are deleted.
RETENTION_SWEEP_S = 600.0
# How long a job whose model service answers 503 keeps trying before it fails with that 503: longer than a
# BentoCloud cold start, and than a burst of sync requests holding the service busy.
UNAVAILABLE_BUDGET_S = 900.0
MAX_RETRY_WAIT_S = 30.0

Result = TypeVar("Result")


class JobLost(Exception):
    """The job is no longer this runner's (canceled, or taken over after its lease lapsed): stop working."""


class Progress:
    """What a running job tells its store: its stage in words, and how far it is (0–1).

    A report is also where a runner learns that its job was canceled: it stops there (`JobLost`) and
    drops the model service's progress stream."""

    def __init__(self, store: JobStore, job_id: str, runner: str):
        self.store = store
        self.job_id = job_id
        self.runner = runner

    async def report(self, stage: str, progress: float | None = None) -> None:
        if not await self.store.report(self.job_id, self.runner, stage=stage, progress=progress):
            raise JobLost(self.job_id)

    async def watch(self, service, name: str, call: Coroutine[Any, Any, Any]) -> Any:
        """Await a model service `call`, saying whether `service` is still starting or already working.

        A ready service is told so before the call starts: the probe and the report, made while it works,
        would take CPU from a model running on the same cores (a 128² CPU image took 90 ms longer)."""
        if await is_ready(service):
            try:
                await self.report(f"{name} is working")
            except JobLost:
                call.close()  # never started
                raise
            return await call
        work = asyncio.ensure_future(call)  # the call is what wakes a service scaled to zero
        try:
            await self.report(f"waiting for {name} to start")
            while not work.done() and not await is_ready(service):
                await asyncio.wait({work}, timeout=2.0)
            if not work.done():
                await self.report(f"{name} is working")
            return await work
        finally:
            work.cancel()  # when a report found the job lost; a no-op once it is done

    async def follow(self, stream: AsyncGenerator[str, None], result_type: type[Result]) -> Result:
        """Read a model service's progress stream (JSON lines: `{"step", "steps"}`, then `{"result"}` or
        `{"error"}`), reporting each step; returns the result."""
        pending = ""
        # Closed on the way out, also when the job is lost: the service sees its caller go and stops.
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in filter(None, lines):
                    message = json.loads(line)
                    if "step" in message:
                        stage = f"denoising, step {message['step']} of {message['steps']}"
                        await self.report(stage, message["step"] / message["steps"])
                    elif "error" in message:
                        raise ServiceError(message["error"]["message"], status=message["error"]["status"])
                    else:
                        return result_type.model_validate(message["result"])
        raise ServiceError("The model service ended its answer early.", status=503, retry_after=BACKEND_RETRY_AFTER_S)


async def is_ready(service) -> bool:
    """Whether a model service answers its `/readyz` (a scaled-to-zero one is started by the call anyway)."""
    try:
        return await service.is_ready(timeout=2)
    except Exception:
        return False


Execute = Callable[[dict, Progress], Awaitable[dict]]


class JobRunner:
    """Runs the jobs of one `kind` with `execute(request, progress) -> result`, `concurrency` at once."""

    def __init__(self, store: JobStore, kind: str, execute: Execute, concurrency: int):
        self.store = store
        self.kind = kind
        self.execute = execute
        self.concurrency = concurrency
        # One name per replica process and capability: what its leases are held under.
        self.name = f"{kind}-{secrets.token_hex(6)}"
        self._running: set[asyncio.Task] = set()

    async def run(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        try:
            while True:
                await slots.acquire()
                try:
                    job = await self.store.claim(self.kind, self.name)
                except Exception:
                    logger.exception("%s could not claim a job; retrying", self.name)
                    job = None
                if job is None:
                    slots.release()
                    await self.store.wait_for_change(IDLE_POLL_S)
                    continue
                task = asyncio.create_task(self._run_one(job, slots))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)
            # A replica stopping cleanly hands its jobs back at once rather than after their lease.
            with contextlib.suppress(Exception):
                released = await self.store.release(self.name)
                if released:
                    logger.info("%s put %d running jobs back in the queue", self.name, released)

    async def _run_one(self, job: dict, slots: asyncio.Semaphore) -> None:
        try:
            work = asyncio.create_task(self._attempt(job))
            while True:
                done, _ = await asyncio.wait({work}, timeout=LEASE_S / 3)
                if done:
                    break
                if not await self.store.renew(job["id"], self.name):
                    # Canceled, or taken over after a lapse: whatever it would answer is discarded.
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await work
                    return
            outcome = work.result()
            await self.store.complete(job["id"], self.name, **outcome)
        except asyncio.CancelledError:
            work.cancel()
            raise
        except Exception:
            logger.exception(
                "job %s: could not record its outcome; its lease will lapse and it will run again", job["id"]
            )
        finally:
            slots.release()

    async def _attempt(self, job: dict) -> dict:
        """{"result": ...} or {"error": {"status", "message"}}: a job's outcome, never an exception."""
        progress = Progress(self.store, job["id"], self.name)
        lost = {"error": {"status": 409, "message": "The job is no longer this runner's."}}  # discarded anyway
        deadline = time.monotonic() + UNAVAILABLE_BUDGET_S
        while True:
            try:
                return {"result": await self.execute(job["request"], progress)}
            except JobLost:
                return lost
            except ServiceError as error:
                wait_s = min(float(error.retry_after or 5), MAX_RETRY_WAIT_S)
                if error.status != 503 or time.monotonic() + wait_s > deadline:
                    return {"error": {"status": error.status, "message": error.message}}
                waiting = error.message
            except Exception:
                logger.exception("job %s failed", job["id"])
                return {"error": {"status": 500, "message": "An unexpected error occurred; it has been logged."}}
            try:
                await progress.report(waiting)
            except JobLost:
                return lost
            await asyncio.sleep(wait_s)


async def delete_expired_jobs(store: JobStore) -> None:
    """Delete finished jobs past their retention, now and every RETENTION_SWEEP_S."""
    while True:
        try:
            deleted = await store.delete_expired()
            if deleted:
                logger.info("deleted %d jobs past JOB_RETENTION_S", deleted)
        except Exception:
            logger.exception("could not delete expired jobs; will retry")
        await asyncio.sleep(RETENTION_SWEEP_S)

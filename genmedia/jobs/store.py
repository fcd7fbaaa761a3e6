"""What a job is, and every change to it: each one transaction on the job store, safe across replicas.

A job moves `queued` → `running` → `succeeded` | `failed` | `canceled`, and only forward. A runner holds a
running job under a lease it renews; every write a runner makes names it (`lease_owner`) and the status it
expects, so a runner whose lease lapsed (its replica was stopped, or the job was canceled meanwhile) changes
nothing: its result is discarded. Claims take `FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas never
wait on each other's rows; SQLite serializes writers itself (`BEGIN IMMEDIATE`, see `schema`).

The methods are coroutines that run the blocking database work in a thread and then wake whoever waits on
this replica (`wait_for_change`): event streams and idle runners see a local change at once, and a change made
by another replica within their polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from genmedia.contract.errors import NotFound, ServiceError
from genmedia.jobs import webhooks
from genmedia.jobs.schema import create_engine_for, jobs, migrate
from genmedia.settings import Settings

FINAL_STATUSES = ("succeeded", "failed", "canceled")
WEBHOOK_EVENTS = ("started", "progress", "completed")
DEFAULT_WEBHOOK_EVENTS = ("completed",)
IDEMPOTENCY_WINDOW_S = 24 * 3600
MAX_IDEMPOTENCY_KEY_CHARS = 255
# A runner renews its lease every third of it; a replica that stops renewing loses its jobs this long after.
LEASE_S = 10.0
# Claims of one job: a job that keeps taking its replica down with it fails instead of taking down the next.
MAX_ATTEMPTS = 3


class Conflict(ServiceError):
    status = 409


def body_hash(kind: str, body: dict) -> str:
    """What tells a replay of a submit from another body under the same Idempotency-Key."""
    return hashlib.sha256(json.dumps({"kind": kind, **body}, sort_keys=True).encode()).hexdigest()


def iso_time(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class ChangeSignal:
    """Wakes every coroutine of this event loop that waits for a job to change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)


class JobStore:
    def __init__(self, engine, retention_s: float, clock: Callable[[], float] = time.time):
        self.engine = engine
        self.retention_s = retention_s
        self.clock = clock
        self._changed = ChangeSignal()

    @classmethod
    def open(cls, settings: Settings) -> JobStore:
        """The store of JOB_STORE_URL, its schema created or migrated (blocking: call it at start)."""
        engine = create_engine_for(settings.job_store_url)
        migrate(engine)
        return cls(engine, settings.job_retention_s)

    async def _run(self, work: Callable[..., Any], *args: Any, changes: bool = True) -> Any:
        result = await asyncio.to_thread(work, *args)
        if changes:
            self._changed.notify()
        return result

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return when a job changed on this replica, or after `timeout_s` (for the other replicas' changes)."""
        await self._changed.wait(timeout_s)

    # What clients ask.

    async def submit(
        self,
        *,
        kind: str,
        owner: str,
        request: dict,
        submitted: dict,
        idempotency_key: str | None,
        webhook: str | None,
        webhook_events: tuple[str, ...],
    ) -> tuple[dict, bool]:
        """A new queued job, or (idempotency) the one this key already made: (job, created)."""
        row = {
            "id": uuid.uuid4().hex,
            "kind": kind,
            "owner": owner,
            "status": "queued",
            "request": request,
            "progress": 0.0,
            "stage": None,
            "result": None,
            "error": None,
            "created_at": self.clock(),
            "started_at": None,
            "finished_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "version": 1,
            "attempts": 0,
            "idempotency_key": idempotency_key,
            "body_hash": body_hash(kind, submitted),
            "webhook": webhook,
            "webhook_events": list(webhook_events),
        }
        try:
            return await self._run(self._submit, row)
        except IntegrityError:
            # Another submit with this key committed between our look-up and insert: answer with its job.
            return await self._run(self._submit, row)

    def _submit(self, row: dict) -> tuple[dict, bool]:
        with self.engine.begin() as connection:
            if row["idempotency_key"] is not None:
                mine = and_(jobs.c.owner == row["owner"], jobs.c.idempotency_key == row["idempotency_key"])
                earlier = connection.execute(select(jobs).where(mine)).mappings().first()
                if earlier is not None and earlier["created_at"] > row["created_at"] - IDEMPOTENCY_WINDOW_S:
                    if earlier["body_hash"] != row["body_hash"]:
                        raise Conflict(
                            "Idempotency-Key: already used with another body in the last 24 h; "
                            "send a new key for a new request."
                        )
                    return self._view(connection, earlier), False
                if earlier is not None:
                    # Past its 24 h, the key is free again; the old job stays until its retention ends.
                    connection.execute(update(jobs).where(jobs.c.id == earlier["id"]).values(idempotency_key=None))
            connection.execute(insert(jobs).values(**row))
            return self._view(connection, row), True

    async def get(self, job_id: str, owner: str) -> dict | None:
        """The job as its owner sees it; None for an unknown id or another owner's job."""
        found = await self.get_versioned(job_id, owner)
        return None if found is None else found[0]

    async def get_versioned(self, job_id: str, owner: str) -> tuple[dict, int] | None:
        """The job and the id of its latest event (its `version`), or None."""
        return await self._run(self._get_versioned, job_id, owner, changes=False)

    def _get_versioned(self, job_id: str, owner: str) -> tuple[dict, int] | None:
        with self.engine.connect() as connection:
            row = self._owned(connection, job_id, owner)
            return None if row is None else (self._view(connection, row), row["version"])

    async def cancel(self, job_id: str, owner: str) -> dict:
        return await self._run(self._cancel, job_id, owner)

    def _cancel(self, job_id: str, owner: str) -> dict:
        with self.engine.begin() as connection:
            row = self._owned(connection, job_id, owner, for_update=True)
            if row is None:
                raise NotFound("No job with that id for this API key.")
            if row["status"] in FINAL_STATUSES:
                raise Conflict(f"The job already {row['status']}; only a queued or running job can be canceled.")
            # A running job's runner finds its lease gone at its next renewal and stops; its result is dropped.
            return self._finish(connection, row, status="canceled")

    # What runners do.

    async def claim(self, kind: str, runner: str) -> dict | None:
        """The oldest queued job of `kind` (or a running one whose lease lapsed), now running under `runner`."""
        # Only a claim that took a job is a change: waking the other runners for an empty claim would have
        # them claim in turn and wake each other, a busy loop that keeps an idle gateway at a full core.
        job = await self._run(self._claim, kind, runner, changes=False)
        if job is not None:
            self._changed.notify()
        return job

    def _claim(self, kind: str, runner: str) -> dict | None:
        now = self.clock()
        claimable = or_(jobs.c.status == "queued", and_(jobs.c.status == "running", jobs.c.lease_expires_at < now))
        query = (
            select(jobs)
            .where(jobs.c.kind == kind, claimable)
            .order_by(jobs.c.created_at, jobs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        with self.engine.begin() as connection:
            while (row := connection.execute(query).mappings().first()) is not None:
                if row["attempts"] < MAX_ATTEMPTS:
                    break
                message = f"The job was interrupted {row['attempts']} times (its gateway stopped); submit it again."
                self._finish(connection, row, status="failed", error={"status": 500, "message": message})
            else:
                return None
            changes = {
                "status": "running",
                "lease_owner": runner,
                "lease_expires_at": now + LEASE_S,
                "started_at": row["started_at"] or now,
                "attempts": row["attempts"] + 1,
                "progress": 0.0,
                "stage": "starting",
                "version": row["version"] + 1,
            }
            connection.execute(update(jobs).where(jobs.c.id == row["id"]).values(**changes))
            claimed = {**row, **changes}
            if row["status"] == "queued":
                self._enqueue_webhook(connection, claimed, "started")
            return claimed

    async def renew(self, job_id: str, runner: str) -> bool:
        """Extend the lease; False when the job is no longer this runner's (canceled, or taken over)."""
        return await self._run(self._renew, job_id, runner, changes=False)

    def _renew(self, job_id: str, runner: str) -> bool:
        with self.engine.begin() as connection:
            renewed = connection.execute(
                update(jobs).where(*self._held(job_id, runner)).values(lease_expires_at=self.clock() + LEASE_S)
            )
            return renewed.rowcount == 1

    async def report(self, job_id: str, runner: str, *, stage: str, progress: float | None = None) -> bool:
        """Record what a running job does now (and how far it is); False when it is no longer this runner's."""
        return await self._run(self._report, job_id, runner, stage, progress)

    def _report(self, job_id: str, runner: str, stage: str, progress: float | None) -> bool:
        with self.engine.begin() as connection:
            row = connection.execute(select(jobs).where(*self._held(job_id, runner))).mappings().first()
            if row is None:
                return False
            changes = {"stage": stage, "version": row["version"] + 1, "lease_expires_at": self.clock() + LEASE_S}
            if progress is not None:
                changes["progress"] = max(0.0, min(1.0, progress))
            connection.execute(update(jobs).where(jobs.c.id == job_id).values(**changes))
            if progress is not None and progress != row["progress"]:
                self._enqueue_webhook(connection, {**row, **changes}, "progress")
            return True

    async def complete(
        self, job_id: str, runner: str, *, result: dict | None = None, error: dict | None = None
    ) -> bool:
        """Record the outcome: `succeeded` with `result`, or `failed` with `error`; False when discarded."""
        return await self._run(self._complete, job_id, runner, result, error)

    def _complete(self, job_id: str, runner: str, result: dict | None, error: dict | None) -> bool:
        with self.engine.begin() as connection:
            query = select(jobs).where(*self._held(job_id, runner)).with_for_update()
            row = connection.execute(query).mappings().first()
            if row is None:
                return False
            status = "succeeded" if error is None else "failed"
            self._finish(connection, row, status=status, result=result, error=error)
            return True

    async def release(self, runner: str) -> int:
        """Put the jobs `runner` holds back in the queue (a replica stopping cleanly): the next runner starts
        them at once instead of after their lease."""
        return await self._run(self._release, runner)

    def _release(self, runner: str) -> int:
        with self.engine.begin() as connection:
            released = connection.execute(
                update(jobs)
                .where(jobs.c.lease_owner == runner, jobs.c.status == "running")
                .values(
                    status="queued",
                    lease_owner=None,
                    lease_expires_at=None,
                    stage=None,
                    progress=0.0,
                    attempts=jobs.c.attempts - 1,
                    version=jobs.c.version + 1,
                )
            )
            return released.rowcount

    async def delete_expired(self) -> int:
        """Delete the jobs finished more than JOB_RETENTION_S ago; returns how many."""
        return await self._run(self._delete_expired, changes=False)

    def _delete_expired(self) -> int:
        with self.engine.begin() as connection:
            cutoff = self.clock() - self.retention_s
            return connection.execute(delete(jobs).where(jobs.c.finished_at < cutoff)).rowcount

    # Shared parts.

    @staticmethod
    def _held(job_id: str, runner: str) -> tuple:
        return jobs.c.id == job_id, jobs.c.lease_owner == runner, jobs.c.status == "running"

    @staticmethod
    def _owned(connection: Connection, job_id: str, owner: str, for_update: bool = False):
        query = select(jobs).where(jobs.c.id == job_id, jobs.c.owner == owner)
        if for_update:
            query = query.with_for_update()
        return connection.execute(query).mappings().first()

    def _finish(self, connection: Connection, row, *, status: str, result=None, error=None) -> dict:
        changes = {
            "status": status,
            "result": result,
            "error": error,
            "finished_at": self.clock(),
            "progress": 1.0 if status == "succeeded" else row["progress"],
            "stage": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "version": row["version"] + 1,
        }
        connection.execute(update(jobs).where(jobs.c.id == row["id"]).values(**changes))
        finished = {**row, **changes}
        self._enqueue_webhook(connection, finished, "completed")
        return self._view(connection, finished)

    def _enqueue_webhook(self, connection: Connection, row, event: str) -> None:
        if row["webhook"] and event in (row["webhook_events"] or ()):
            webhooks.enqueue_webhook(connection, self._view(connection, row), f"job.{event}")

    def _view(self, connection: Connection, row) -> dict:
        """The job as the contract shows it (`GET /jobs/{id}`), plus `stage`: what a running job does now."""
        position = None
        if row["status"] == "queued":
            ahead = or_(
                jobs.c.created_at < row["created_at"],
                and_(jobs.c.created_at == row["created_at"], jobs.c.id < row["id"]),
            )
            query = select(func.count()).where(jobs.c.kind == row["kind"], jobs.c.status == "queued", ahead)
            position = connection.execute(query).scalar_one()
        return {
            "id": row["id"],
            "kind": row["kind"],
            "status": row["status"],
            "stage": row["stage"],
            "progress": row["progress"],
            "queue_position": position,
            "created_at": iso_time(row["created_at"]),
            "started_at": iso_time(row["started_at"]),
            "finished_at": iso_time(row["finished_at"]),
            "result": row["result"],
            "error": row["error"],
            "webhook": None
            if not row["webhook"]
            else {
                "url": row["webhook"],
                "events": row["webhook_events"],
                "deliveries": webhooks.deliveries(connection, row["id"]),
            },
        }

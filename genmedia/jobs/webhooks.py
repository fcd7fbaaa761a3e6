"""Webhooks: target checks, and a durable outbox that delivers signed events (Standard Webhooks).

Why it is built this way:
- An event is a row of `webhook_deliveries`, written in the same transaction that changes the job
  (`enqueue_webhook`), so a job never finishes without its event, and a gateway restart loses none.
- `WebhookSender.run` (one per gateway replica) claims due rows under a lease, `FOR UPDATE SKIP LOCKED` on
  PostgreSQL, so replicas on one database never send the same try twice; a lease that lapsed (its replica
  died mid-try) is taken again: delivery is at least once. Every try carries the row's id as `webhook-id`
  and the same body, signed afresh (receivers refuse a timestamp older than five minutes).
- A failed try (non-2xx, timeout, refused) is retried with exponential backoff and jitter until
  WEBHOOK_RETRY_WINDOW_S after the event; then the delivery is `failed`. The job itself is unaffected.
- The target is a URL the caller chose, sent from inside our network: the name is resolved and every
  address checked (no loopback, private, link-local, multicast or metadata addresses unless
  WEBHOOK_ALLOW_PRIVATE) at submit and again at each try, and the try connects to the address checked,
  with the URL's own Host header and TLS server name, so a DNS answer that changes in between (rebinding)
  cannot redirect it. Redirects are not followed; a try takes at most 10 s and reads at most 4 KB.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    insert,
    or_,
    select,
    update,
)
from standardwebhooks import Webhook

from genmedia.contract.errors import InvalidInput
from genmedia.jobs.schema import jobs, metadata
from genmedia.settings import Settings

logger = logging.getLogger("genmedia.webhooks")

EVENT_TYPES = ("job.started", "job.progress", "job.completed")
DELIVERY_TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 4096  # of a receiver's answer body; only its status matters
LEASE_S = 60.0  # longer than a try (resolve + 10 s), so a live sender's lease never lapses under it
FIRST_RETRY_S = 5.0  # doubled at each try; shorter for a window under an hour (window / 720)
CLAIM_BATCH = 16  # tries one replica makes at once
POLL_S = 0.5  # how often an idle sender looks for due deliveries
PAUSE_S = 5.0  # how long it waits after the job store did not answer
# Cloud metadata endpoints that are not link-local (169.254.169.254 and fe80::/10 are refused as such).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),  # the `webhook-id` of every try
    Column("job_id", String(40), ForeignKey(jobs.c.id, ondelete="CASCADE"), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the body, fixed at enqueue: every try sends the same bytes
    Column("status", String(16), nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Float),
    Column("last_attempt_at", Float),
    Column("last_response_status", Integer),  # the receiver's HTTP status, null when it gave none
    Column("last_error", String(300)),  # why the last try failed, in words
    Column("finished_at", Float),
    Index("webhook_deliveries_due", "status", "next_attempt_at"),
    Index("webhook_deliveries_job", "job_id"),
)


# Targets.


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL whose name was resolved and checked: `address` is the one a try connects to."""

    url: httpx.URL
    address: str

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address (the Host header keeps the name)."""
        return self.url.copy_with(host=self.address)


def refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not go to `address` ("a loopback address"), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address (it reaches this machine)"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


def resolve_webhook_target(url: str, allow_private: bool) -> WebhookTarget:
    """Parse, resolve and check a webhook URL; `InvalidInput` ("webhook: ...") says what is wrong.

    Blocking (a DNS lookup): call it from a thread in async code.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise InvalidInput("webhook: not a valid URL; send an https:// URL") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise InvalidInput("webhook: must be an https:// URL (http:// only with WEBHOOK_ALLOW_PRIVATE=true)")
    if not parsed.host:
        raise InvalidInput("webhook: the URL has no host")
    if parsed.userinfo:
        raise InvalidInput("webhook: credentials in the URL are not allowed; check the signature instead")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InvalidInput(f"webhook: {parsed.host} does not resolve to an address") from None
    # Zone ids (`fe80::1%eth0`) are not part of the address.
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].partition("%")[0]) for info in found))
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason:
                raise InvalidInput(
                    f"webhook: {parsed.host} is {reason}; webhooks go to public addresses only "
                    "(WEBHOOK_ALLOW_PRIVATE=true allows others)"
                )
    # IPv4 first where a name has both: the address most networks (and containers) route.
    return WebhookTarget(parsed, str(min(addresses, key=lambda address: address.version)))


def check_webhook_target(url: str, allow_private: bool) -> None:
    """Refuse (`InvalidInput`, 400) a webhook URL a delivery could not or must not go to. Blocking (DNS)."""
    resolve_webhook_target(url, allow_private)


# The outbox.


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enqueue_webhook(connection: Connection, job: dict[str, Any], event: str) -> str | None:
    """Queue `event` (`started`, `progress`, `completed`, or the same as `job.…`) about `job` (as GET /jobs/{id}
    answers it) in the caller's transaction.

    The target and the events wanted are the job's own (`jobs.webhook`, `jobs.webhook_events`); a job
    without a webhook, or not wanting this event, queues nothing (None). A progress event not yet tried is
    replaced by the newer one rather than queued behind it. Returns the delivery's `webhook-id`.
    """
    event_type = f"job.{event.removeprefix('job.')}"
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event!r}; one of {', '.join(EVENT_TYPES)}")
    row = connection.execute(select(jobs.c.webhook, jobs.c.webhook_events).where(jobs.c.id == job["id"])).one()
    if not row.webhook or event_type.removeprefix("job.") not in (row.webhook_events or ()):
        return None
    payload = json.dumps({"type": event_type, "timestamp": now_iso(), "data": job}, separators=(",", ":"))
    now = time.time()
    if event_type == "job.progress":
        untried = connection.execute(
            update(webhook_deliveries)
            .where(
                webhook_deliveries.c.job_id == job["id"],
                webhook_deliveries.c.event_type == event_type,
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.attempts == 0,
                webhook_deliveries.c.lease_owner.is_(None),
            )
            .values(payload=payload)
            .returning(webhook_deliveries.c.id)
        ).first()
        if untried is not None:
            return untried.id
    delivery_id = f"msg_{uuid.uuid4().hex}"
    connection.execute(
        insert(webhook_deliveries).values(
            id=delivery_id,
            job_id=job["id"],
            event_type=event_type,
            url=row.webhook,
            payload=payload,
            status="pending",
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
    )
    return delivery_id


def deliveries(connection: Connection, job_id: str) -> list[dict[str, Any]]:
    """The job's webhook deliveries, oldest first: what was sent, its state, and the last try's outcome."""
    rows = connection.execute(
        select(webhook_deliveries)
        .where(webhook_deliveries.c.job_id == job_id)
        .order_by(webhook_deliveries.c.created_at, webhook_deliveries.c.id)
    ).mappings()
    return [
        {
            "id": row["id"],
            "type": row["event_type"],
            "status": row["status"],
            "attempts": row["attempts"],
            "created_at": iso(row["created_at"]),
            "last_attempt_at": iso(row["last_attempt_at"]),
            "next_attempt_at": iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
            "response_status": row["last_response_status"],
            "error": row["last_error"],
            "finished_at": iso(row["finished_at"]),
        }
        for row in rows
    ]


def retry_delay_s(attempts: int, window_s: float) -> float:
    """Seconds before try `attempts + 1`: doubling from FIRST_RETRY_S, at most a quarter of the window,
    each scaled by a random 50–100 % so receivers that failed together are not retried together."""
    first = min(FIRST_RETRY_S, window_s / 720)
    return min(first * 2 ** (attempts - 1), window_s / 4) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    response_status: int | None
    error: str | None


class WebhookSender:
    """The delivery loop of one gateway replica: `await sender.run()` beside the job runners."""

    def __init__(self, engine: Engine, settings: Settings, *, tls_verify: Any = True):
        """`tls_verify` is httpx's `verify` (a CA bundle path or an `ssl.SSLContext` for private CAs)."""
        self.engine = engine
        self.window_s = settings.webhook_retry_window_s
        self.allow_private = settings.webhook_allow_private
        self.signer = Webhook(settings.webhook_secret) if settings.webhook_secret else None
        self.owner = f"webhooks-{uuid.uuid4().hex[:12]}"
        self.tls_verify = tls_verify

    async def run(self) -> None:
        """Deliver due events until cancelled."""
        if self.signer is None:
            logger.warning("WEBHOOK_SECRET is not set: no webhook is delivered")
            return
        # No proxy from the environment (trust_env): a proxy would connect to the name, not the checked address.
        async with httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=DELIVERY_TIMEOUT_S,
            verify=self.tls_verify,
        ) as http:
            while True:
                try:
                    due = await asyncio.to_thread(self.claim)
                except Exception as error:
                    # The database may be away a while (a restart); the loop outlives it. The error's text
                    # may quote SQL parameters (event bodies), so only its kind is logged.
                    logger.warning("webhook outbox unreachable (%s); retrying in %s s", type(error).__name__, PAUSE_S)
                    await asyncio.sleep(PAUSE_S)
                    continue
                if due:
                    await asyncio.gather(*(self.deliver(http, row) for row in due))
                else:
                    await asyncio.sleep(POLL_S)

    def claim(self) -> list[dict[str, Any]]:
        """Take up to CLAIM_BATCH due deliveries under this sender's lease."""
        now = time.time()
        with self.engine.begin() as connection:
            rows = (
                connection.execute(
                    select(webhook_deliveries)
                    .where(
                        webhook_deliveries.c.status == "pending",
                        webhook_deliveries.c.next_attempt_at <= now,
                        or_(
                            webhook_deliveries.c.lease_expires_at.is_(None),
                            webhook_deliveries.c.lease_expires_at < now,
                        ),
                    )
                    .order_by(webhook_deliveries.c.next_attempt_at)
                    .limit(CLAIM_BATCH)
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .all()
            )
            if rows:
                connection.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id.in_([row["id"] for row in rows]))
                    .values(lease_owner=self.owner, lease_expires_at=now + LEASE_S)
                )
        return [dict(row) for row in rows]

    async def deliver(self, http: httpx.AsyncClient, row: dict[str, Any]) -> None:
        outcome = await self.attempt(http, row)
        if not outcome.delivered:
            logger.info(
                "webhook %s for job %s: try %d failed: %s", row["id"], row["job_id"], row["attempts"] + 1, outcome.error
            )
        try:
            await asyncio.to_thread(self.record, row, outcome)
        except Exception as error:
            # Unrecorded, the try is made again once this lease lapses: at least once, never lost.
            logger.warning("webhook %s: outcome not recorded (%s)", row["id"], type(error).__name__)

    async def attempt(self, http: httpx.AsyncClient, row: dict[str, Any]) -> Outcome:
        """One try: check the target again, connect to the address checked, POST the signed event."""
        try:
            target = await asyncio.to_thread(resolve_webhook_target, row["url"], self.allow_private)
        except InvalidInput as refused:
            return Outcome(False, None, refused.message.removeprefix("webhook: "))
        sent_at = datetime.now(UTC)
        headers = {
            "host": target.url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": "genmedia-webhooks",
            "webhook-id": row["id"],
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self.signer.sign(row["id"], sent_at, row["payload"]),
        }
        # TLS checks the certificate against the URL's name, not the address connected to.
        extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
        try:
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                request = http.build_request(
                    "POST", target.pinned_url, content=row["payload"].encode(), headers=headers, extensions=extensions
                )
                response = await http.send(request, stream=True)
                try:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(False, None, f"no answer within {DELIVERY_TIMEOUT_S:.0f} s")
        except httpx.HTTPError as error:
            return Outcome(False, None, f"could not deliver: {type(error).__name__}")
        if 200 <= response.status_code < 300:
            return Outcome(True, response.status_code, None)
        return Outcome(False, response.status_code, f"answered {response.status_code}")

    def record(self, row: dict[str, Any], outcome: Outcome) -> None:
        """Store a try's outcome: delivered, retried later, or failed once the window is spent."""
        now = time.time()
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_attempt_at": now,
            "last_response_status": outcome.response_status,
            "last_error": outcome.error[:300] if outcome.error else None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if outcome.delivered:
            values.update(status="delivered", finished_at=now)
        else:
            next_attempt_at = now + retry_delay_s(attempts, self.window_s)
            if next_attempt_at > row["created_at"] + self.window_s:
                values.update(status="failed", finished_at=now)
            else:
                values.update(next_attempt_at=next_attempt_at)
        with self.engine.begin() as connection:
            connection.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == row["id"], webhook_deliveries.c.lease_owner == self.owner)
                .values(**values)
            )

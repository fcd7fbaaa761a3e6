"""Who may call the gateway, and how often: the checks that run before a request body is even parsed.

`AccessGuard` is ASGI middleware, so it answers before BentoML reads and validates the body, in the order
the contract gives, cheapest first: blocked IP (403) → API key (401) → rate limit (429) → capacity (503),
then the body (`genmedia.contract.bodies`: content type 415, size 413, deadline 408, form 400).
Health probes, metrics and the OpenAPI docs pass untouched; `/files/...` is public (it is what
`public_url` points at) but still refused to blocked IPs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from typing import Protocol

from starlette.middleware.cors import CORSMiddleware

from genmedia.contract.bodies import BodyGuard, UploadField, send_error
from genmedia.contract.errors import BUSY_RETRY_AFTER_S
from genmedia.metrics import metrics
from genmedia.settings import IPNetwork, Settings, get_settings

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/")
# The API page's scripts and styles, and what `public_url` points at: no key needed, block list applies.
PUBLIC_PREFIXES = ("/files/", "/static_content/")
# The gateway's upload routes and their file fields (`genmedia.contract.bodies` checks their forms).
UPLOADS = {"/caption_image": UploadField("image")}
# Polling an async job is authenticated but not rate limited: a client waiting on a job should not run
# out of requests for new work.
POLLING_SUFFIXES = ("/status", "/get")


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[IPNetwork, ...]) -> str:
    """The caller's IP: the peer, or, only when the peer is a trusted proxy, the nearest untrusted
    address in `X-Forwarded-For` (right to left, so a client cannot prepend a fake one)."""
    address = peer or "0.0.0.0"
    if not forwarded_for or not _in_any(address, trusted_proxies):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address
        address = hop
        if not _in_any(hop, trusted_proxies):
            break
    return address


def _in_any(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_matches(token: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key, so timing reveals nothing."""
    if token is None:
        return False
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    return matched


class RateLimiter(Protocol):
    """Takes one request's token for `identity`; returns None if allowed, else seconds to wait.

    The in-memory `TokenBucketLimiter` serves one gateway replica; several replicas need a shared
    implementation (Redis, say) behind this same method.
    """

    def acquire(self, identity: str) -> float | None: ...


class TokenBucketLimiter:
    """`per_minute` tokens per identity, refilled continuously; at most `max_identities` remembered (the
    least recently seen are forgotten, which only ever gives a forgotten caller a fresh bucket)."""

    def __init__(self, per_minute: int, max_identities: int = 100_000):
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self.max_identities = max_identities
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, identity: str) -> float | None:
        now = time.monotonic()
        with self._lock:
            tokens, updated = self._buckets.pop(identity, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - updated) * self.refill_per_s)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[identity] = (tokens, now)
            while len(self._buckets) > self.max_identities:
                self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.refill_per_s


class AccessGuard:
    """ASGI middleware: IP block, API key, rate limit, capacity and the body's bounds, before anything else runs."""

    def __init__(
        self,
        app,
        settings: Settings | None = None,
        limiter: RateLimiter | None = None,
        max_in_flight: int | None = None,
    ):
        self.app = app
        self.settings = settings or get_settings()
        self.limiter = limiter or TokenBucketLimiter(self.settings.rate_limit_per_minute)
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        # Body size, deadline and form checks, shared with the model services (each serves them alone too).
        self.bodies = BodyGuard(app, UPLOADS, self.settings, refuse=self.refuse)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        peer = (scope.get("client") or (None,))[0]
        address = client_address(peer, headers.get("x-forwarded-for"), self.settings.trusted_proxies)

        if _in_any(address, self.settings.blocked_ips):
            return await self.refuse(send, "blocked", 403, "Your IP address is blocked from this service.")
        if scope["path"].startswith(PUBLIC_PREFIXES):
            return await self.app(scope, receive, send)

        token = bearer_token(headers.get("authorization"))
        if self.settings.gateway_api_keys and not key_matches(token, self.settings.gateway_api_keys):
            return await self.refuse(
                send,
                "auth",
                401,
                "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": "Bearer"},
            )
        # Keys are hashed so the limiter's memory never holds a secret.
        identity = "key:" + hashlib.sha256(token.encode()).hexdigest() if token else f"ip:{address}"
        polling = scope["path"].endswith(POLLING_SUFFIXES)
        if not polling and (wait_s := self.limiter.acquire(identity)) is not None:
            retry_after = max(1, math.ceil(wait_s))
            return await self.refuse(
                send,
                "rate",
                429,
                f"Rate limit of {self.settings.rate_limit_per_minute} requests per minute reached; "
                f"retry in {retry_after} s.",
                {"Retry-After": str(retry_after)},
            )

        # A body being received holds a slot: slow senders count against the cap, and cannot pile up beyond it.
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            return await self.refuse(
                send,
                "busy",
                503,
                f"The gateway is at capacity; retry in {BUSY_RETRY_AFTER_S} s.",
                {"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )
        self.in_flight += 1
        try:
            return await self.bodies(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def refuse(self, send, reason: str, status: int, message: str, headers: dict | None = None) -> None:
        metrics().gateway_refused.labels(reason).inc()
        await send_error(send, status, message, headers)


class Cors:
    """CORS for `CORS_ORIGINS`, outermost, so preflights are answered without a key and even refusals
    carry the headers a browser needs to read them. No origins configured: no CORS headers at all."""

    def __init__(self, app, settings: Settings | None = None):
        origins = list((settings or get_settings()).cors_origins)
        self.app = (
            CORSMiddleware(
                app,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PUT", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["Retry-After"],
                max_age=600,
            )
            if origins
            else app
        )

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)

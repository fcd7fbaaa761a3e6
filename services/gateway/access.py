"""Who may call the gateway, and how often: the checks that run before a request body is even parsed.

`AccessGuard` is ASGI middleware, so it answers before BentoML reads and validates the body, in the order
the contract gives, cheapest first: blocked IP (403) → API key (401) → rate limit (429) → content type (415)
→ body size (413).
Health probes, metrics and the OpenAPI docs pass untouched; `/files/...` (what `public_url` points at) and
the playground (`/`, `/playground/...`) need no key but are still refused to blocked IPs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import math
import threading
import time
from collections import OrderedDict
from typing import Protocol

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.middleware.cors import CORSMiddleware

from genmedia.contract.errors import BUSY_RETRY_AFTER_S
from genmedia.contract.requests import MAX_UPLOAD_BYTES
from genmedia.metrics import metrics
from genmedia.settings import IPNetwork, Settings, get_settings

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json")
# The playground page, its assets and the API page's, and what `public_url` points at: no key needed, block
# list applies. (The page sends the key itself on every call it makes.)
PUBLIC_PATHS = ("/",)
PUBLIC_PREFIXES = ("/files/", "/static_content/", "/playground/")
JSON_BODY_LIMIT = 64 * 1024
# Multipart framing around an upload of at most MAX_UPLOAD_BYTES.
UPLOAD_BODY_LIMIT = MAX_UPLOAD_BYTES + 64 * 1024
UPLOAD_PATHS = ("/caption_image",)
# The file field of each upload route: BentoML would download a text value of it as a URL.
UPLOAD_FIELDS = {"/caption_image": "image"}
# A refused body is still read (and dropped) up to this much before the refusal is sent, so that clients
# which send the whole body before reading (Python's urllib and requests) read the 413 instead of a reset
# connection (uvicorn closes a connection whose body was not read). Past it, or past the deadline, the
# refusal goes out at once. A client that asked `Expect: 100-continue` (curl) has sent nothing yet: it is
# answered at once and never sends the body.
REFUSED_BODY_DRAIN_BYTES = 64 * 1024 * 1024
REFUSED_BODY_DRAIN_S = 30
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
    """ASGI middleware: IP block, API key, rate limit and body size, before anything else runs."""

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

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        peer = (scope.get("client") or (None,))[0]
        address = client_address(peer, headers.get("x-forwarded-for"), self.settings.trusted_proxies)

        if _in_any(address, self.settings.blocked_ips):
            return await self.refuse(send, "blocked", 403, "Your IP address is blocked from this service.")
        if scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIXES):
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

        receive = BodyReceiver(receive, headers)
        if (wrong_type := content_type_problem(scope["path"], headers)) is not None:
            await receive.drain()
            return await self.refuse(send, "media_type", 415, wrong_type)

        limit = UPLOAD_BODY_LIMIT if scope["path"] in UPLOAD_PATHS else JSON_BODY_LIMIT
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await receive.drain()
            return await self.refuse(send, "too_large", 413, f"Request body is over {limit} bytes.")
        # A body sent without a length (chunked) is read here, bounded, and replayed to the app.
        body = await read_body(receive, limit)
        if body is None:
            await receive.drain()
            return await self.refuse(send, "too_large", 413, f"Request body is over {limit} bytes.")
        if (problem := await form_problem(scope, body)) is not None:
            return await self.refuse(send, "invalid", 400, problem)
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
            return await self.app(scope, replay(body, receive), send)
        finally:
            self.in_flight -= 1

    async def refuse(self, send, reason: str, status: int, message: str, headers: dict | None = None) -> None:
        metrics().gateway_refused.labels(reason).inc()
        body = json.dumps({"error": message}).encode()
        raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})


def content_type_problem(path: str, headers: dict[str, str]) -> str | None:
    """Why a request's body has the wrong media type for its route, or None.

    JSON routes take `application/json` only: a browser sends `text/plain` (and forms) cross-site without a
    CORS preflight, so accepting them would let any web page spend an open gateway's GPU. A request without
    a body (a bodiless POST) needs no type.
    """
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    expected = "multipart/form-data" if path in UPLOAD_PATHS else "application/json"
    if not has_body(headers) or media_type == expected:
        return None
    sent = f"'{media_type}'" if media_type else "no Content-Type"
    return f"Content-Type: this route takes {expected}, not {sent}."


class BodyReceiver:
    """The ASGI `receive` of one request, remembering whether the client has sent all of its body."""

    def __init__(self, receive, headers: dict[str, str]):
        self._receive = receive
        self.complete = not has_body(headers) or headers.get("expect", "").lower() == "100-continue"

    async def __call__(self):
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            self.complete = True
        return message

    async def drain(self) -> None:
        """Read and drop what is left of a refused body, up to a bound, before the refusal is sent."""
        drained = 0

        async def read_rest() -> None:
            nonlocal drained
            while not self.complete and drained <= REFUSED_BODY_DRAIN_BYTES:
                drained += len((await self()).get("body", b""))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read_rest(), REFUSED_BODY_DRAIN_S)


def has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


async def form_problem(scope, body: bytes) -> str | None:
    """What is wrong with a form body, or None. BentoML answers 500 for what Starlette's form parser refuses
    (a missing boundary, broken framing, over 1000 fields), and downloads a text value given for a file
    field as a URL, from the gateway; both are refused here first."""
    headers = Headers(scope=scope)
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        parser = MultiPartParser
    elif content_type == "application/x-www-form-urlencoded":
        parser = FormParser
    else:
        return None

    async def stream():
        yield body

    try:
        form = await parser(headers, stream()).parse()
    except MultiPartException as error:
        return f"body: {error.message}"
    try:
        field = UPLOAD_FIELDS.get(scope["path"])
        if field and any(not isinstance(value, UploadFile) for value in form.getlist(field)):
            return f"{field}: send the file itself as a multipart file part (text and URLs are not fetched)."
    finally:
        await form.close()
    return None


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it grows past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive):
    sent = False

    async def receive_buffered():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_buffered


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

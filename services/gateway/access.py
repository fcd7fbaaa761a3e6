"""Who may call the gateway, and how often: the checks that run before a request body is even parsed.

`AddressCheck`, outermost, resolves the caller's address once and refuses blocked addresses (403) on every
path and method, and `/metrics` to anyone outside `METRICS_ALLOWED` (403). `AccessGuard` then answers before
BentoML reads and validates the body, in the order the contract gives, cheapest first: API key (401; too many
wrong ones from an address, 429) → rate limit (429) → capacity (503) → the body (`genmedia.contract.bodies`:
content type 415, size 413, deadline 408, form 400). Health probes, metrics and the OpenAPI docs pass it
untouched; `/files/...`, the playground (`/`, `/playground/...`) and the API page's assets are public.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json

from starlette.middleware.cors import CORSMiddleware

from genmedia.contract.bodies import BodyGuard, UploadField, send_error
from genmedia.contract.errors import BUSY_RETRY_AFTER_S
from genmedia.metrics import metrics, without_file_keys
from genmedia.settings import IPNetwork, Settings, get_settings
from services.gateway.limits import RequestLimits, retry_after

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/")
# The playground's and the API page's assets, and what `public_url` points at: no key needed, block list
# applies (`AddressCheck`). The playground page sends the key itself on every call it makes.
PUBLIC_PREFIXES = ("/files/", "/static_content/", "/playground/")
# The gateway's upload routes and their file fields (`genmedia.contract.bodies` checks their forms).
UPLOADS = {"/caption_image": UploadField("image")}
# Polling a job (its status, its event stream) is authenticated but not rate limited: a client waiting on
# a job should not run out of requests for new work.
POLLING_PREFIX = "/jobs/"


def is_polling(method: str, path: str) -> bool:
    return method == "GET" and path.startswith(POLLING_PREFIX)


# Where `AddressCheck` leaves the caller's address for the checks inside it.
CLIENT_ADDRESS = "genmedia.client_address"


class UnparseableAddress(ValueError):
    """An `X-Forwarded-For` hop that is not an IP address."""


def normalised_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`text` as one IP, the way a block list must see it: `[v6]` and `[v6]:port` unbracketed, `v4:port`
    without its port, an IPv4-mapped IPv6 address as the IPv4 one it is; None if it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[IPNetwork, ...]) -> str:
    """The caller's IP: the peer, or, only when the peer is a trusted proxy, the nearest untrusted
    address in `X-Forwarded-For` (right to left, so a client cannot prepend a fake one). A hop that is not
    an IP raises `UnparseableAddress`: using the proxy's address instead would give every client one identity."""
    address = normalised_ip(peer or "") or ipaddress.ip_address("0.0.0.0")
    if not forwarded_for or not _in_any(address, trusted_proxies):
        return str(address)
    for hop in reversed([part for part in forwarded_for.split(",") if part.strip()]):
        parsed = normalised_ip(hop)
        if parsed is None:
            raise UnparseableAddress(hop.strip()[:64])
        address = parsed
        if not _in_any(parsed, trusted_proxies):
            break
    return str(address)


def _in_any(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address, networks: tuple[IPNetwork, ...]) -> bool:
    ip = normalised_ip(address) if isinstance(address, str) else address
    return ip is not None and any(ip in network for network in networks)


def header_values(scope, name: bytes) -> list[str]:
    """Every value of header `name` (lowercase), in order: a header sent twice is two entries."""
    return [value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name]


class AddressCheck:
    """ASGI middleware, outermost: the caller's address, resolved once (`X-Forwarded-For` lines joined, as
    proxies may split them), then the block list and the `/metrics` allow list, before any route, CORS
    preflights and health probes included."""

    def __init__(self, app, settings: Settings | None = None):
        self.app = app
        self.settings = settings or get_settings()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        peer = (scope.get("client") or (None,))[0]
        forwarded_for = ", ".join(header_values(scope, b"x-forwarded-for"))
        try:
            address = client_address(peer, forwarded_for, self.settings.trusted_proxies)
        except UnparseableAddress as hop:
            return await refuse(send, "invalid", 400, f"X-Forwarded-For: {json.dumps(str(hop))} is not an IP address.")
        if _in_any(address, self.settings.blocked_ips):
            return await refuse(send, "blocked", 403, "Your IP address is blocked from this service.")
        scope[CLIENT_ADDRESS] = address
        if scope["path"] == "/metrics":
            if not _in_any(address, self.settings.metrics_allowed):
                return await refuse(send, "metrics", 403, "/metrics is answered only to METRICS_ALLOWED addresses.")
            return await self.app(scope, receive, metrics_without_file_keys(send))
        return await self.app(scope, receive, send)


def metrics_without_file_keys(send):
    """`send` for the `/metrics` answer, rewritten by `genmedia.metrics.without_file_keys`."""
    start, chunks = None, []

    async def send_folded(message):
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = without_file_keys(b"".join(chunks)) if start["status"] == 200 else b"".join(chunks)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return send_folded


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


class AccessGuard:
    """ASGI middleware, inside `AddressCheck`: API key, rate limit, capacity and the body's bounds, before
    anything else runs."""

    def __init__(
        self,
        app,
        settings: Settings | None = None,
        limits: RequestLimits | None = None,
        max_in_flight: int | None = None,
    ):
        self.app = app
        self.settings = settings or get_settings()
        self.limits = limits or RequestLimits(self.settings)
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        # Body type, size, deadline and form checks, shared with the model services (each serves them alone too).
        self.bodies = BodyGuard(app, UPLOADS, self.settings, refuse=self.refuse)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if scope["path"].startswith(PUBLIC_PREFIXES):
            return await self.app(scope, receive, send)

        try:
            identity = await self.identify(scope, scope[CLIENT_ADDRESS])
        except Refused as refusal:
            return await self.refuse(send, *refusal.args)
        polling = is_polling(scope["method"], scope["path"])
        if not polling and (wait_s := await self.limits.acquire(identity)) is not None:
            seconds = retry_after(wait_s)
            return await self.refuse(
                send,
                "rate",
                429,
                f"Rate limit of {self.settings.rate_limit_per_minute} requests per minute reached; "
                f"retry in {seconds} s.",
                {"Retry-After": str(seconds)},
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

    async def identify(self, scope, address: str) -> str:
        """What the rate limit counts: the key (hashed, so the limiter never holds a secret) where keys are
        configured, else the address, since a made-up token must not buy a fresh window. Raises `Refused`:
        400 for two `Authorization` headers (which one would count?), 429 for an address out of wrong keys
        (before its key is checked, or the answer would still tell a guesser when it is right), 401 for a
        wrong or missing key."""
        authorizations = header_values(scope, b"authorization")
        if len(authorizations) > 1:
            raise Refused("invalid", 400, "Authorization: send one Authorization header, not several.")
        token = bearer_token(authorizations[0] if authorizations else None)
        keys = self.settings.gateway_api_keys
        if not keys:
            return f"ip:{address}"
        if (wait_s := await self.limits.auth_locked(address)) is not None:
            raise too_many_wrong_keys(self.settings, wait_s)
        if not key_matches(token, keys):
            if token is not None and (wait_s := await self.limits.auth_failed(address)) is not None:
                raise too_many_wrong_keys(self.settings, wait_s)
            message = "Missing or wrong API key: send 'Authorization: Bearer <key>'."
            raise Refused("auth", 401, message, {"WWW-Authenticate": "Bearer"})
        return "key:" + hashlib.sha256(token.encode()).hexdigest()

    async def refuse(self, send, reason: str, status: int, message: str, headers: dict | None = None) -> None:
        await refuse(send, reason, status, message, headers)


class Refused(Exception):
    """A refusal: `refuse`'s arguments (reason, status, message[, headers])."""


def too_many_wrong_keys(settings: Settings, wait_s: float) -> Refused:
    seconds = retry_after(wait_s)
    message = (
        f"Too many wrong API keys from your address ({settings.auth_failures_per_minute} a minute); "
        f"retry in {seconds} s."
    )
    return Refused("auth_failures", 429, message, {"Retry-After": str(seconds)})


async def refuse(send, reason: str, status: int, message: str, headers: dict | None = None) -> None:
    """Answer `{"error": message}` with `status`, counted in `genmedia_gateway_refused_total{reason}`."""
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

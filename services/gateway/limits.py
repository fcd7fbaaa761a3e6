"""How often a caller may ask, counted once for every gateway replica: `limits`' moving window, in Redis or memory.

Two limits share one storage (`RATE_LIMIT_STORAGE_URL`): requests per identity (`RATE_LIMIT_PER_MINUTE`)
and wrong API keys per client address (`AUTH_FAILURES_PER_MINUTE`).

The strategy is the moving window: it keeps the time of each of the last N requests of an identity, so N a
minute holds over any 60 s (a fixed window lets 2N through around its boundary) and the wait it announces
is exact, the oldest of those times plus a minute, so a client that honours `Retry-After` is let in. The
sliding-window counter keeps two integers instead of N times, but it only estimates the count, so its reset
time is an estimate too and an honoured `Retry-After` may still meet a 429. The cost is at most N times per
identity, each gone a minute after it was taken.

`memory://` counts in this replica alone, at most `MEMORY_IDENTITIES` identities (the oldest forgotten first,
which only ever gives a forgotten caller a fresh window). `redis://` is shared; every key expires with its
window, so Redis holds only the identities seen in the last minute. When Redis fails, each replica counts in
its own memory (a warning once per outage, `genmedia_rate_limit_fallback_total` per request counted there)
and tries Redis again `SHARED_RETRY_S` later: limits per replica for a while, never none and never a 5xx.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Awaitable, Callable

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from genmedia import logger
from genmedia.metrics import metrics
from genmedia.settings import Settings

# About 450 bytes each in memory (dict entries, a list, a lock), plus 140 per request of the last minute.
MEMORY_IDENTITIES = 100_000
# A Redis call that takes longer counts as a failure: the limit must never be what makes the gateway slow.
SHARED_TIMEOUT_S = 0.5
SHARED_CONNECTIONS = 32
KEY_PREFIX = "genmedia-limits"
# How long a replica counts alone after Redis failed before it tries Redis again.
SHARED_RETRY_S = 5.0


class BoundedMemoryStorage(MemoryStorage):
    """`limits`' memory storage, holding the windows of at most `max_identities` identities.

    It forgets an identity only when its window expires, so made-up identities would grow it without bound
    for a minute; past the bound the oldest window is dropped (dicts keep insertion order).
    """

    def __init__(self, max_identities: int = MEMORY_IDENTITIES):
        super().__init__()
        self.max_identities = max_identities

    def __len__(self) -> int:
        return len(self.events)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        while key not in self.events and len(self.events) >= self.max_identities:
            oldest = next(iter(self.events))
            self.events.pop(oldest, None)
            self.locks.pop(oldest, None)
        return await super().acquire_entry(key, limit, expiry, amount)

    async def _MemoryStorage__expire_events(self) -> None:
        """The pass that drops expired window entries, in place of `limits`' own (a private method), which
        hops to the default thread pool for every identity while holding that identity's lock: with the
        pool busy (storage lookups in a flood), every request of that identity waited behind it, before the
        gateway's in-flight cap could refuse anything. Here the same work runs on the loop, each identity
        with no await in between (so no lock is needed), yielding every 1000 identities."""
        now = time.time()
        for n, key in enumerate(list(self.events)):
            events = self.events.get(key) or []
            # Newest first, so the entries that have not expired are a prefix.
            kept = events[: bisect.bisect_left(events, -now, key=lambda event: -event.expiry)]
            if kept:
                self.events[key] = kept
            else:
                self.events.pop(key, None)
                self.locks.pop(key, None)
            if n % 1000 == 999:
                await asyncio.sleep(0)


def shared_storage(url: str) -> RedisStorage | None:
    """The Redis storage at `url`, or None for `memory://`.

    At most `SHARED_CONNECTIONS` connections, a burst waiting its turn for one (an unbounded pool would open
    a connection per request in flight). A call retries once (a connection Redis closed on restart) and
    gives up fast: a slow Redis is handled as a failed one.
    """
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=SHARED_CONNECTIONS,
        timeout=SHARED_TIMEOUT_S,
        socket_timeout=SHARED_TIMEOUT_S,
        socket_connect_timeout=SHARED_TIMEOUT_S,
        retry=Retry(NoBackoff(), retries=1),
    )
    return RedisStorage(
        f"async+{url}", implementation="redispy", wrap_exceptions=True, key_prefix=KEY_PREFIX, connection_pool=pool
    )


class RequestLimits:
    """Requests per identity and wrong keys per address, each call answering None (go on) or the seconds
    to wait."""

    def __init__(self, settings: Settings):
        self.per_identity = RateLimitItemPerMinute(settings.rate_limit_per_minute)
        self.auth_failures = RateLimitItemPerMinute(settings.auth_failures_per_minute)
        self.local = MovingWindowRateLimiter(BoundedMemoryStorage())
        storage = shared_storage(settings.rate_limit_storage_url)
        self.shared = MovingWindowRateLimiter(storage) if storage else None
        self.shared_retry_at = 0.0
        self.shared_failing = False

    async def acquire(self, identity: str) -> float | None:
        """Count one request of `identity` if its limit allows it."""
        return await self.counted(lambda limiter: hit(limiter, self.per_identity, "request", identity))

    async def auth_locked(self, address: str) -> float | None:
        """Whether `address` has used up its wrong keys for now (counts nothing)."""
        return await self.counted(lambda limiter: depleted(limiter, self.auth_failures, "auth", address))

    async def auth_failed(self, address: str) -> float | None:
        """Count one wrong key from `address`; the seconds to wait once that was one too many."""
        return await self.counted(lambda limiter: hit(limiter, self.auth_failures, "auth", address))

    async def counted(self, check: Callable[[MovingWindowRateLimiter], Awaitable[float | None]]) -> float | None:
        """`check` against Redis, or against this replica's memory while Redis is failing."""
        if self.shared is not None and time.monotonic() >= self.shared_retry_at:
            try:
                # Waiting for a pooled connection, then the call and its one retry: 0.5 s each at most.
                answer = await asyncio.wait_for(check(self.shared), SHARED_TIMEOUT_S * 3)
            except (StorageError, TimeoutError, OSError) as error:
                self.shared_failed(error)
            else:
                if self.shared_failing:
                    self.shared_failing = False
                    logger.warning("rate limit storage is back: limits are shared by all replicas again")
                return answer
        if self.shared is not None:
            metrics().rate_limit_fallback.inc()
        return await check(self.local)

    def shared_failed(self, error: Exception) -> None:
        self.shared_retry_at = time.monotonic() + SHARED_RETRY_S
        if not self.shared_failing:
            self.shared_failing = True
            # The error's class only: a Redis error message can quote the URL, and so its password.
            logger.warning(
                "rate limit storage failed (%s): limiting in this replica's memory, retrying every %.0f s",
                type(getattr(error, "storage_error", error)).__name__,
                SHARED_RETRY_S,
            )


async def hit(limiter: MovingWindowRateLimiter, item: RateLimitItem, *identity: str) -> float | None:
    if await limiter.hit(item, *identity):
        return None
    return await wait_s(limiter, item, *identity)


async def depleted(limiter: MovingWindowRateLimiter, item: RateLimitItem, *identity: str) -> float | None:
    return None if await limiter.test(item, *identity) else await wait_s(limiter, item, *identity)


async def wait_s(limiter: MovingWindowRateLimiter, item: RateLimitItem, *identity: str) -> float:
    """Seconds until the window lets one more in: when its oldest entry leaves it."""
    stats = await limiter.get_window_stats(item, *identity)
    return max(0.0, stats.reset_time - time.time())


def retry_after(wait: float) -> int:
    """`Retry-After` in whole seconds, rounded up so that a client honouring it is not early."""
    return max(1, math.ceil(wait))

"""The rate limits (`services.gateway.limits`) against a real Redis: two `RequestLimits` are two gateway
replicas. The same promises end to end, through two real gateways, are in tests/test_shared_limits.py."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import tracemalloc

import prometheus_client
import pytest
from limits import RateLimitItemPerSecond

from genmedia.settings import Settings, SettingsError
from services.gateway import limits as gateway_limits
from services.gateway.limits import BoundedMemoryStorage, RequestLimits

FALLBACK = "genmedia_rate_limit_fallback_total"


def replicas(url: str, count: int = 2, **env: str) -> list[RequestLimits]:
    settings = Settings.from_env({"RATE_LIMIT_PER_MINUTE": "5", "RATE_LIMIT_STORAGE_URL": url, **env})
    return [RequestLimits(settings) for _ in range(count)]


async def take(limiters: list[RequestLimits], identity: str, times: int) -> list[float | None]:
    """`times` requests of `identity`, spread over the replicas in turn."""
    return [await limiters[n % len(limiters)].acquire(identity) for n in range(times)]


def fallbacks() -> float:
    return prometheus_client.REGISTRY.get_sample_value(FALLBACK) or 0.0


def test_replicas_sharing_redis_allow_the_limit_in_all_and_say_exactly_when_to_retry(redis_server):
    async def run():
        first, second = replicas(redis_server.url)
        allowed = await take([first, second], "key:shared", 5)
        started = time.time()
        refused = [await first.acquire("key:shared"), await second.acquire("key:shared")]
        return allowed, refused, started

    allowed, refused, started = asyncio.run(run())
    assert allowed == [None] * 5
    # The window reopens a minute after the first of the five: the wait is that, to the fraction of a second.
    assert all(wait is not None and 55 < wait <= 60 for wait in refused), refused


def test_replicas_with_memory_storage_each_allow_the_limit(redis_server):
    async def run():
        return await take(replicas("memory://"), "key:alone", 12)

    answers = asyncio.run(run())
    assert answers.count(None) == 10  # 5 in each replica
    assert all(answer is not None for answer in answers[10:])


def test_wrong_keys_are_counted_per_address_in_the_shared_storage(redis_server):
    async def run():
        first, second = replicas(redis_server.url, AUTH_FAILURES_PER_MINUTE="10")
        locked_before = [await first.auth_locked("198.51.100.9")]
        for n in range(10):
            await (first if n % 2 else second).auth_failed("198.51.100.9")
        return locked_before, await second.auth_locked("198.51.100.9"), await first.auth_locked("198.51.100.10")

    before, locked, other = asyncio.run(run())
    assert before == [None]
    assert locked is not None and 55 < locked <= 60
    assert other is None


def test_redis_down_limits_each_replica_in_memory_and_comes_back_shared(redis_server, caplog, monkeypatch):
    monkeypatch.setattr(gateway_limits, "SHARED_RETRY_S", 0.5)

    async def run():
        first, second = replicas(redis_server.url)
        redis_server.kill()
        try:
            counted_before = fallbacks()
            with caplog.at_level(logging.WARNING, logger="bentoml.genmedia"):
                down = await take([first, second], "key:outage", 14)
            counted = fallbacks() - counted_before
            warnings = [r.getMessage() for r in caplog.records if "rate limit storage failed" in r.getMessage()]
        finally:
            redis_server.start()
        deadline = time.monotonic() + 30
        for limiter in (first, second):
            while limiter.shared_failing:
                assert time.monotonic() < deadline, "a replica did not go back to Redis"
                await asyncio.sleep(0.1)
                await limiter.acquire(f"key:probe-{time.monotonic()}")
        shared = await take([first, second], "key:after-outage", 6)
        return down, counted, warnings, shared

    down, counted, warnings, shared = asyncio.run(run())
    # Per replica: 5 each, then refused; never unlimited, never an exception.
    assert down.count(None) == 10 and all(answer is not None for answer in down[10:])
    assert counted == 14
    assert len(warnings) == 2, warnings  # once per replica, not once per request
    assert shared[:5] == [None] * 5 and shared[5] is not None


def test_a_slow_redis_counts_as_a_failed_one(redis_server, monkeypatch):
    monkeypatch.setattr(gateway_limits, "SHARED_RETRY_S", 60)

    async def run():
        [limiter] = replicas(redis_server.url, count=1)
        assert await limiter.acquire("key:warm") is None
        redis_server.process.send_signal(signal.SIGSTOP)  # the socket stays open, nothing answers
        try:
            started = time.monotonic()
            answer = await limiter.acquire("key:while-stopped")
            return answer, time.monotonic() - started
        finally:
            redis_server.process.send_signal(signal.SIGCONT)

    answer, seconds = asyncio.run(run())
    assert answer is None
    assert seconds < 5 * gateway_limits.SHARED_TIMEOUT_S


def test_memory_storage_stays_bounded_under_made_up_identities():
    async def run():
        storage = BoundedMemoryStorage(max_identities=10_000)
        limiter = gateway_limits.MovingWindowRateLimiter(storage)
        item = gateway_limits.RateLimitItemPerMinute(30)
        tracemalloc.start()
        try:
            for n in range(100_000):
                await limiter.hit(item, "request", f"ip:made-up-{n}")
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return len(storage), held

    remembered, held = asyncio.run(run())
    assert remembered == 10_000
    # About 450 bytes an identity with one request in its window (its list, a lock, dict entries): 4.5 MB
    # here, 45 MB at the default bound.
    assert held < 10_000 * 1_000


def test_redis_memory_stays_bounded_under_made_up_identities(redis_server, monkeypatch):
    # Generous timeouts: on a busy machine a slow answer would send checks to the fallback, not to Redis.
    monkeypatch.setattr(gateway_limits, "SHARED_TIMEOUT_S", 30)

    async def run():
        [limiter] = replicas(redis_server.url, count=1)
        # As many at once as the pool has connections, so that no check waits for one on a busy machine.
        batch = gateway_limits.SHARED_CONNECTIONS
        for start in range(0, 100_000, batch):
            await asyncio.gather(*(limiter.acquire(f"ip:made-up-{n}") for n in range(start, start + batch)))

    fell_back = fallbacks()
    with redis_server.client() as client:
        before = client.info("memory")["used_memory"]
        asyncio.run(run())
        # The peak, since the first windows may have expired already on a slow machine.
        grown = client.info("memory")["used_memory_peak"] - before
        sampled = [client.ttl(key) for key in client.scan_iter(f"{gateway_limits.KEY_PREFIX}:*made-up*", count=1_000)]
    assert fallbacks() == fell_back, "every check counted in Redis"
    # Each identity is one short list (about 300 bytes with Redis's own overhead) that expires with its
    # window: Redis frees it a minute later.
    assert grown < 100_000 * 400, grown
    # Every key expires (-1 would be a key kept for good; -2, one gone since the scan).
    assert len(sampled) >= 1_000 and -1 not in sampled and max(sampled) <= 60


@pytest.mark.parametrize("url", ["memcached://127.0.0.1", "redis:/no-slashes", "127.0.0.1:6379"])
def test_an_unknown_storage_url_is_refused_at_start_without_showing_it(url):
    with pytest.raises(SettingsError, match="RATE_LIMIT_STORAGE_URL") as raised:
        Settings.from_env({"RATE_LIMIT_STORAGE_URL": url.replace("127.0.0.1", "user:secret@127.0.0.1")})
    assert "secret" not in str(raised.value)


def test_memory_storage_forgets_a_window_once_it_has_passed():
    async def run():
        storage = BoundedMemoryStorage()
        limiter = gateway_limits.MovingWindowRateLimiter(storage)
        item = RateLimitItemPerSecond(2)
        for n in range(50):
            await limiter.hit(item, f"ip:caller-{n}")
        remembered = len(storage)
        deadline = time.monotonic() + 10
        while len(storage) > 1:  # the pass runs after each hit; this caller's own window is the newest
            assert time.monotonic() < deadline, f"{len(storage)} windows still remembered"
            await asyncio.sleep(0.2)
            await limiter.hit(item, "ip:still-calling")
        return remembered

    assert asyncio.run(run()) == 50

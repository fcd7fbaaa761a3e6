"""The access checks' own bounds, directly (tests/test_access.py checks their rules): what an attacker can
make the gateway remember or compute per request stays small. The limits under 100 000 made-up identities,
in memory and in Redis, are measured in tests/test_limits.py."""

from __future__ import annotations

import asyncio
import ipaddress
import time

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter

from services.gateway.access import client_address
from services.gateway.limits import BoundedMemoryStorage


def test_the_oldest_windows_are_forgotten_first_never_a_wrong_refusal():
    async def run():
        storage = BoundedMemoryStorage(max_identities=100)
        limiter, item = MovingWindowRateLimiter(storage), RateLimitItemPerMinute(2)
        assert [await limiter.hit(item, "busy"), await limiter.hit(item, "busy")] == [True, True]
        for n in range(99):
            await limiter.hit(item, f"made-up-{n}")
        still_limited = not await limiter.hit(item, "busy")
        for n in range(100, 200):
            await limiter.hit(item, f"made-up-{n}")
        return still_limited, await limiter.hit(item, "busy"), len(storage)

    still_limited, fresh, remembered = asyncio.run(run())
    assert still_limited, "still remembered, still limited"
    assert fresh, "forgotten: a fresh window"
    assert remembered == 100


def test_a_forwarded_for_header_of_thousands_of_hops_costs_little():
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    hops = ", ".join(["6.6.6.6"] * 5_000 + ["198.51.100.7"] + [f"10.0.{n // 256}.{n % 256}" for n in range(5_000)])
    started = time.perf_counter()
    assert client_address("10.0.0.1", hops, proxies) == "198.51.100.7"
    assert client_address("203.0.113.1", hops, proxies) == "203.0.113.1"
    assert time.perf_counter() - started < 0.5

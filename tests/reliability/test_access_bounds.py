"""The access checks' own bounds, directly (tests/test_access.py checks their rules): what an attacker can
make the gateway remember or compute per request stays small."""

from __future__ import annotations

import hashlib
import ipaddress
import time
import tracemalloc

from services.gateway.access import TokenBucketLimiter, client_address


def identities(count: int, start: int = 0):
    return ("key:" + hashlib.sha256(str(n).encode()).hexdigest() for n in range(start, start + count))


def test_the_limiter_holds_a_bounded_number_of_bytes_however_many_identities_call():
    tracemalloc.start()
    try:
        limiter = TokenBucketLimiter(per_minute=30, max_identities=2_000)
        for identity in identities(50_000):
            limiter.acquire(identity)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(limiter) == 2_000
    # About 300 bytes an identity (a 68-character key, two floats, the ordered-dict link): 0.6 MB here,
    # and about 30 MB at the default bound of 100 000.
    assert held < 2_000 * 600


def test_the_least_recently_seen_identities_are_forgotten_first():
    limiter = TokenBucketLimiter(per_minute=2, max_identities=100)
    assert [limiter.acquire("busy"), limiter.acquire("busy")] == [None, None]
    for identity in identities(99):
        limiter.acquire(identity)
    assert limiter.acquire("busy") is not None, "still remembered, still limited"
    for identity in identities(100, start=1_000):
        limiter.acquire(identity)
    assert limiter.acquire("busy") is None, "forgotten: a fresh bucket, never a wrong refusal"


def test_a_forwarded_for_header_of_thousands_of_hops_costs_little():
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    hops = ", ".join(["6.6.6.6"] * 5_000 + ["198.51.100.7"] + [f"10.0.{n // 256}.{n % 256}" for n in range(5_000)])
    started = time.perf_counter()
    assert client_address("10.0.0.1", hops, proxies) == "198.51.100.7"
    assert client_address("203.0.113.1", hops, proxies) == "203.0.113.1"
    assert time.perf_counter() - started < 0.5

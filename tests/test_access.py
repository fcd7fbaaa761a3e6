"""The gateway's access rules as plain functions: client identity, API keys, the token bucket."""

from __future__ import annotations

import ipaddress
import time

import pytest

from genmedia.settings import Settings, SettingsError
from services.gateway.access import TokenBucketLimiter, bearer_token, client_address, key_matches

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "1.2.3.4", "203.0.113.5"),  # untrusted peer: its header is ignored
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),  # trusted proxy: the client it saw
        ("10.0.0.2", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # a prepended fake hop is not believed
        ("10.0.0.2", "198.51.100.7, 10.0.0.9", "198.51.100.7"),  # through two trusted proxies
        ("10.0.0.2", "not-an-ip", "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
    ],
)
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(peer, forwarded_for, expected):
    assert client_address(peer, forwarded_for, PROXIES) == expected


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("Bearer", None), ("Basic abc", None), ("abc", None), (None, None)],
)
def test_bearer_token_parsing(header, token):
    assert bearer_token(header) == token


def test_key_matches_only_configured_keys():
    keys = ("first-key", "second-key")
    assert key_matches("second-key", keys)
    assert not key_matches("second-ke", keys)
    assert not key_matches(None, keys)
    assert not key_matches("", keys)


def test_token_bucket_allows_the_limit_then_says_how_long_to_wait():
    limiter = TokenBucketLimiter(per_minute=3)
    assert [limiter.acquire("a") for _ in range(3)] == [None, None, None]
    wait = limiter.acquire("a")
    assert wait is not None and 0 < wait <= 20
    assert limiter.acquire("b") is None


def test_token_bucket_refills_over_time():
    limiter = TokenBucketLimiter(per_minute=600)  # one token every 0.1 s
    while limiter.acquire("a") is None:
        pass
    time.sleep(0.25)
    assert limiter.acquire("a") is None


def test_token_bucket_memory_is_bounded():
    limiter = TokenBucketLimiter(per_minute=5, max_identities=100)
    for n in range(10_000):
        limiter.acquire(f"key:{n}")
    assert len(limiter) == 100


def test_wildcard_cors_is_refused_when_keys_are_required():
    with pytest.raises(SettingsError, match="CORS_ORIGINS"):
        Settings.from_env({"GATEWAY_API_KEYS": "k", "CORS_ORIGINS": "*"})

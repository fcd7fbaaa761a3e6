"""The gateway's access rules: client addresses, API keys, and the middleware's answers, called as ASGI apps
in process (a real `AddressCheck` and `AccessGuard` around a small app that says what reached it)."""

from __future__ import annotations

import asyncio
import ipaddress
import json

import pytest

from genmedia.metrics import without_file_keys
from genmedia.settings import Settings, SettingsError
from services.gateway.access import (
    AccessGuard,
    AddressCheck,
    UnparseableAddress,
    bearer_token,
    client_address,
    key_matches,
)

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)
KEY = "access-test-key-0123456789"


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "1.2.3.4", "203.0.113.5"),  # untrusted peer: its header is ignored
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),  # trusted proxy: the client it saw
        ("10.0.0.2", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # a prepended fake hop is not believed
        ("10.0.0.2", "198.51.100.7, 10.0.0.9", "198.51.100.7"),  # through two trusted proxies
        ("10.0.0.2", "", "10.0.0.2"),
        ("::ffff:10.0.0.2", "198.51.100.7", "198.51.100.7"),  # a mapped peer is the IPv4 proxy it is
    ],
)
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(peer, forwarded_for, expected):
    assert client_address(peer, forwarded_for, PROXIES) == expected


@pytest.mark.parametrize(
    "spelling",
    ["198.51.100.5", "::ffff:198.51.100.5", "::ffff:c633:6405", "[::ffff:198.51.100.5]", "198.51.100.5:1234"],
)
def test_every_spelling_of_an_ipv4_address_is_that_address(spelling):
    assert client_address("10.0.0.2", spelling, PROXIES) == "198.51.100.5"


@pytest.mark.parametrize(
    ("spelling", "expected"), [("[2001:db8::7]:443", "2001:db8::7"), ("2001:DB8::7", "2001:db8::7")]
)
def test_ipv6_addresses_lose_brackets_and_ports(spelling, expected):
    assert client_address("10.0.0.2", spelling, PROXIES) == expected


@pytest.mark.parametrize("hop", ["not-an-ip", "198.51.100.5:http", "[2001:db8::7", "1.2.3.4:5:6", "unknown"])
def test_an_unparseable_hop_is_refused_rather_than_replaced_by_the_proxy(hop):
    with pytest.raises(UnparseableAddress):
        client_address("10.0.0.2", f"192.0.2.1, {hop}", PROXIES)


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


def test_wildcard_cors_is_refused_when_keys_are_required():
    with pytest.raises(SettingsError, match="CORS_ORIGINS"):
        Settings.from_env({"GATEWAY_API_KEYS": KEY, "CORS_ORIGINS": "*"})


@pytest.mark.parametrize("keys", ["k1", f"{KEY},fifteen-chars-1"])
def test_api_keys_shorter_than_16_characters_are_refused_at_start(keys):
    with pytest.raises(SettingsError, match="GATEWAY_API_KEYS") as raised:
        Settings.from_env({"GATEWAY_API_KEYS": keys})
    assert "k1" not in str(raised.value) and "fifteen" not in str(raised.value)


# The middleware, in process.


async def reached(scope, receive, send):
    """The app behind the checks: answers 200 with the path it was reached on."""
    body = json.dumps({"reached": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def guarded(**env: str):
    settings = Settings.from_env({"TRUSTED_PROXIES": "10.0.0.0/8", **env})
    return AddressCheck(AccessGuard(reached, settings), settings)


def call(app, path: str = "/generate_image", method: str = "POST", peer: str = "10.0.0.2", headers=()):
    """One request through `app`: (status, headers, decoded JSON body)."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
        "client": (peer, 50000),
    }
    messages = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], dict((k.decode(), v.decode()) for k, v in start["headers"]), json.loads(body)


@pytest.mark.parametrize(
    ("path", "method"),
    [("/", "GET"), ("/docs.json", "GET"), ("/metrics", "GET"), ("/readyz", "GET"), ("/files/x", "GET")]
    + [("/generate_image", "OPTIONS"), ("/generate_image", "POST")],
)
def test_a_blocked_client_gets_403_on_every_path(path, method):
    app = guarded(BLOCKED_IPS="198.51.100.0/24")
    status, _, body = call(app, path, method, headers=[("X-Forwarded-For", "::ffff:198.51.100.5")])
    assert status == 403 and "blocked" in body["error"]


def test_every_forwarded_for_line_is_read():
    app = guarded(BLOCKED_IPS="198.51.100.0/24")
    lines = [("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-For", "198.51.100.5")]
    assert call(app, headers=lines)[0] == 403


def test_metrics_are_answered_only_to_metrics_allowed():
    app = guarded()
    assert call(app, "/metrics", "GET", peer="127.0.0.1")[0] == 200
    assert call(app, "/metrics", "GET", headers=[("X-Forwarded-For", "192.168.1.9")])[0] == 200
    status, _, body = call(app, "/metrics", "GET", headers=[("X-Forwarded-For", "192.0.2.9")])
    assert status == 403 and "METRICS_ALLOWED" in body["error"]
    assert call(guarded(METRICS_ALLOWED="192.0.2.0/24"), "/metrics", "GET", peer="127.0.0.1")[0] == 403


def test_two_authorization_headers_get_400():
    app = guarded(GATEWAY_API_KEYS=KEY)
    twice = [("Authorization", f"Bearer {KEY}"), ("Authorization", f"Bearer {KEY}")]
    status, _, body = call(app, headers=twice)
    assert status == 400 and body["error"].startswith("Authorization:")


def test_without_keys_made_up_tokens_share_their_address_limit():
    app = guarded(RATE_LIMIT_PER_MINUTE="3")
    answers = [call(app, headers=[("Authorization", f"Bearer made-up-{n}")])[0] for n in range(4)]
    assert answers == [200, 200, 200, 429]
    # Another address has its own window.
    assert call(app, headers=[("X-Forwarded-For", "192.0.2.2")])[0] == 200


def test_with_keys_each_key_has_its_own_window():
    other = "access-test-key-other-0000"
    app = guarded(GATEWAY_API_KEYS=f"{KEY},{other}", RATE_LIMIT_PER_MINUTE="2")
    first = [call(app, headers=[("Authorization", f"Bearer {KEY}")])[0] for _ in range(3)]
    status, headers, body = call(app, headers=[("Authorization", f"Bearer {KEY}")])
    assert first == [200, 200, 429] and status == 429
    assert 59 <= int(headers["retry-after"]) <= 60 and "Rate limit of 2" in body["error"]
    assert call(app, headers=[("Authorization", f"Bearer {other}")])[0] == 200


def test_metrics_text_folds_file_keys_into_one_series_summing_their_samples():
    exposition = (
        b"# TYPE requests_total counter\n"
        b'requests_total{endpoint="/files/images/aa.png",code="200"} 2.0\n'
        b'requests_total{endpoint="/files/audio/b\\"b.wav",code="200"} 3.0\n'
        b'requests_total{endpoint="/files/images/aa.png",code="404"} 1.0\n'
        b'requests_total{endpoint="/generate_image",code="200"} 7.0\n'
    )
    assert without_file_keys(exposition).decode().splitlines() == [
        "# TYPE requests_total counter",
        'requests_total{endpoint="/files/{file_key}",code="200"} 5.0',
        'requests_total{endpoint="/files/{file_key}",code="404"} 1.0',
        'requests_total{endpoint="/generate_image",code="200"} 7.0',
    ]

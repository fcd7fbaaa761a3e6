"""Rate limits across gateway replicas, end to end: two real gateways (`bentoml serve services.gateway:Gateway`,
tiny models) sharing the session's real Redis, and two counting in their own memory.

Requests that pass the limits are sent invalid (`{"prompt": ""}`: 400 from validation), so nothing here
waits for a model, and `genmedia_gateway_forwarded_total` shows that no refused request reached one.
Loopback is a trusted proxy, so `X-Forwarded-For` gives each test's caller an address of its own. All four
gateways start at once, once for the module (each start costs about a minute on two cores).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from testbed.serving import Server
from tests.gateways import FORWARDED, start_gateway

LIMIT = 5
# One key per test, so that no test spends another's window (the limit counts per key).
TESTS = ("shared", "memory", "outage", "back", "probe", "auth")
KEYS = {name: f"shared-limits-{name}-key-0123456789" for name in TESTS}
BLOCKED = "198.51.100.0/24"
FALLBACK = "genmedia_rate_limit_fallback_total"
INVALID = {"prompt": ""}


def gateway_settings(storage_url: str) -> dict[str, str]:
    return dict(
        GATEWAY_API_KEYS=",".join(KEYS.values()),
        RATE_LIMIT_PER_MINUTE=str(LIMIT),
        RATE_LIMIT_STORAGE_URL=storage_url,
        TRUSTED_PROXIES="127.0.0.1",
        BLOCKED_IPS=BLOCKED,
    )


@pytest.fixture(scope="module")
def gateways(tiny_store, redis_server, tmp_path_factory):
    """{"shared": (a, b), "memory": (c, d)}: the shared pair on the session's Redis."""
    plans = [("shared", redis_server.url)] * 2 + [("memory", "memory://")] * 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(start_gateway, tiny_store, tmp_path_factory.mktemp(f"{name}-gateway"), **gateway_settings(url))
            for name, url in plans
        ]
        servers = [future.result() for future in futures]
    yield {"shared": tuple(servers[:2]), "memory": tuple(servers[2:])}
    for server in servers:
        server.stop()


@pytest.fixture
def shared(gateways):
    return gateways["shared"]


def post(server: Server, key: str, address: str = "192.0.2.1", **headers: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": address, **headers}
    return httpx.post(f"{server.url}/generate_image", headers=headers, json=INVALID, timeout=60)


def forwarded(*servers: Server) -> float:
    return sum(server.metric(FORWARDED) for server in servers)


def test_two_gateways_sharing_redis_allow_the_limit_in_all_and_honour_retry_after(shared):
    first, second = shared
    before = forwarded(first, second)
    passed = [post((first, second)[n % 2], KEYS["shared"]).status_code for n in range(LIMIT)]
    refused = [post(first, KEYS["shared"]), post(second, KEYS["shared"])]
    assert passed == [400] * LIMIT
    assert [response.status_code for response in refused] == [429, 429]
    assert all("Rate limit of 5 requests per minute" in response.json()["error"] for response in refused)
    waits = [int(response.headers["Retry-After"]) for response in refused]
    assert all(1 <= wait <= 60 for wait in waits), waits
    assert forwarded(first, second) == before

    # Honoured, the wait is enough: the window lets one more in, on either gateway.
    time.sleep(max(waits))
    assert post(second, KEYS["shared"]).status_code == 400


def test_two_gateways_with_memory_storage_each_allow_the_limit(gateways):
    for server in gateways["memory"]:
        answers = [post(server, KEYS["memory"]).status_code for _ in range(LIMIT + 1)]
        assert answers == [400] * LIMIT + [429], server.url


def wait_until_shared(server: Server, timeout_s: float = 60) -> None:
    """Until a request is counted in Redis again, not in the gateway's memory."""
    deadline = time.monotonic() + timeout_s
    while True:
        before = server.metric(FALLBACK)
        assert post(server, KEYS["probe"]).status_code in (400, 429)
        if server.metric(FALLBACK) == before:
            return
        assert time.monotonic() < deadline, f"{server.url} still limits in memory:\n{server.log_tail()}"
        time.sleep(0.5)


def test_redis_killed_limits_per_replica_without_a_5xx_and_restarted_shares_again(shared, redis_server):
    first, second = shared
    redis_server.kill()
    try:
        for server in shared:
            answers = [post(server, KEYS["outage"]).status_code for _ in range(LIMIT + 1)]
            assert answers == [400] * LIMIT + [429], answers
            assert server.metric(FALLBACK) >= LIMIT + 1
            assert server.log_text().count("rate limit storage failed") == 1
    finally:
        redis_server.start()
    for server in shared:
        wait_until_shared(server)
    answers = [post((first, second)[n % 2], KEYS["back"]).status_code for n in range(LIMIT)]
    assert answers == [400] * LIMIT
    assert [post(server, KEYS["back"]).status_code for server in shared] == [429, 429]


def test_eleven_wrong_keys_from_one_address_get_429_and_a_right_key_elsewhere_passes(shared):
    first, second = shared
    before = forwarded(first, second)
    guesses = [post((first, second)[n % 2], f"guess-number-{n:04d}-abcdef", "192.0.2.66") for n in range(11)]
    assert [guess.status_code for guess in guesses] == [401] * 10 + [429]
    assert 1 <= int(guesses[-1].headers["Retry-After"]) <= 60
    assert "Too many wrong API keys" in guesses[-1].json()["error"]
    # Locked out, the address gets 429 even for the right key: otherwise a guess that is right would show.
    assert post(first, KEYS["auth"], "192.0.2.66").status_code == 429
    assert post(second, KEYS["auth"], "192.0.2.67").status_code == 400
    assert forwarded(first, second) == before


@pytest.mark.parametrize(
    "forwarded_for",
    ["198.51.100.5", "::ffff:198.51.100.5", "::ffff:c633:6405", "[::ffff:198.51.100.5]", "198.51.100.5:1234"],
)
def test_blocked_address_spellings_get_403(shared, forwarded_for):
    response = post(shared[0], KEYS["auth"], forwarded_for)
    assert response.status_code == 403, response.text
    assert "blocked" in response.json()["error"]


def test_refused_requests_never_reach_a_model_service(shared):
    first, second = shared
    before = forwarded(first, second)
    blocked = {"X-Forwarded-For": "198.51.100.5"}
    for server in shared:
        # A second X-Forwarded-For line is read too (the nearest hop is the blocked one).
        two_lines = [("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-For", "198.51.100.5")]
        assert httpx.post(f"{server.url}/generate_image", headers=two_lines, json={}).status_code == 403
        for path in ("/", "/docs.json", "/metrics", "/readyz", "/livez", "/files/images/x.png"):
            assert httpx.get(f"{server.url}{path}", headers=blocked).status_code == 403, path
        preflight = {**blocked, "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
        assert httpx.options(f"{server.url}/generate_image", headers=preflight).status_code == 403
        assert post(server, "no-such-key-0123456789", "192.0.2.90").status_code == 401
        unparseable = post(server, KEYS["auth"], "not-an-ip")
        assert unparseable.status_code == 400 and unparseable.json()["error"].startswith("X-Forwarded-For:")
        twice = httpx.post(
            f"{server.url}/generate_image",
            headers=[("Authorization", f"Bearer {KEYS['auth']}"), ("Authorization", "Bearer another-key-0123456789")],
            json={"prompt": "x"},
        )
        assert twice.status_code == 400 and twice.json()["error"].startswith("Authorization:")
    assert forwarded(first, second) == before


def test_metrics_only_to_allowed_addresses_and_without_file_keys(shared):
    server = shared[0]
    key = "images/" + "ab" * 32 + ".png"
    assert httpx.get(f"{server.url}/files/{key}").status_code == 404
    public = httpx.get(f"{server.url}/metrics", headers={"X-Forwarded-For": "192.0.2.44"})
    assert public.status_code == 403 and "METRICS_ALLOWED" in public.json()["error"]
    text = httpx.get(f"{server.url}/metrics").text
    assert "ab" * 32 not in text
    assert 'endpoint="/files/{file_key}"' in text

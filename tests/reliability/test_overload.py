"""Overload: more concurrent requests than the services take. The excess is refused fast (429/503, with
Retry-After, as the contract says), nothing queues without bound, memory stays flat, `/livez` keeps
answering, and every request that was accepted completes.

Two shapes: a burst beyond the image service's queue (its `max_concurrency` lowered to
IMAGE_MAX_CONCURRENCY so a few dozen requests overflow it), and a flood beyond the gateway's own
`max_concurrency` while the image service hangs, so that every accepted request is held to the end.
"""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest

from testbed.composition import AUTH, BACKEND_TIMEOUT_S, BODY_TIMEOUT_S, IMAGE_MAX_CONCURRENCY, Suspended, new_seed
from testbed.figures import FIGURES

BURST = 24
FAST_S = 3.0
LIVEZ_BOUND_S = 5.0
RSS_GROWTH_BOUND_MB = 100


def gateway_capacity() -> int:
    """How many requests the gateway holds at once before refusing: its own bound (`MAX_IN_FLIGHT`, kept
    by AccessGuard) where it has one, else BentoML's `traffic.max_concurrency`."""
    import services.gateway

    own = getattr(services.gateway, "MAX_IN_FLIGHT", None)
    return own or services.gateway.Gateway.config["traffic"]["max_concurrency"]


async def probe_livez(url: str, stop: asyncio.Event) -> list[tuple[int, float]]:
    answers = []
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            response = await client.get(f"{url}/livez")
            answers.append((response.status_code, time.monotonic() - started))
            await asyncio.sleep(0.25)
    return answers


async def send_all(url: str, bodies: list[dict], timeout_s: float) -> tuple[list, list]:
    """POST every body to /generate_image at once; returns (status or error, seconds, response) per body,
    and the `/livez` probes made meanwhile."""
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=len(bodies) + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def one(body):
            started = time.monotonic()
            try:
                response = await client.post(f"{url}/generate_image", headers=AUTH, json=body)
            except httpx.HTTPError as error:
                return type(error).__name__, time.monotonic() - started, None
            return response.status_code, time.monotonic() - started, response

        livez = asyncio.create_task(probe_livez(url, stop))
        answers = await asyncio.gather(*(one(body) for body in bodies))
        stop.set()
        return answers, await livez


def record(answers) -> None:
    for status, _, response in answers:
        if response is None:
            FIGURES.record_failure(f"POST /generate_image -> no answer ({status})")
        else:
            FIGURES.record(response, overload=True)


@pytest.fixture(scope="module")
def burst(composition):
    """BURST image requests at once, against an image service that takes IMAGE_MAX_CONCURRENCY."""
    bodies = [{"prompt": "a crowd", "width": 256, "height": 256, "seed": new_seed()} for _ in range(BURST)]
    rss_before = composition.rss_mb()
    answers, livez = asyncio.run(send_all(composition.url, bodies, timeout_s=120))
    record(answers)
    return SimpleNamespace(answers=answers, livez=livez, rss_growth=composition.rss_mb() - rss_before)


@pytest.fixture(scope="module")
def flood(composition):
    """More requests at once than the gateway holds, while the image service hangs (SIGSTOP)."""
    capacity = gateway_capacity()
    bodies = [{"prompt": "a flood", "width": 64, "height": 64, "seed": new_seed()} for _ in range(capacity + 44)]
    gateway_rss = [composition.rss_mb("Gateway")]
    FIGURES.inject()
    with ThreadPoolExecutor(max_workers=1) as pool, Suspended(composition.process("TextToImage")):
        sending = pool.submit(asyncio.run, send_all(composition.url, bodies, timeout_s=BACKEND_TIMEOUT_S + 20))
        while not sending.done():
            gateway_rss.append(composition.rss_mb("Gateway"))
            time.sleep(0.25)
        answers, livez = sending.result()
    record(answers)
    composition.wait_until_serving(("images",), timeout_s=240)
    return SimpleNamespace(
        capacity=capacity, answers=answers, livez=livez, rss_growth=max(gateway_rss) - gateway_rss[0]
    )


def refusals(answers) -> list[httpx.Response]:
    return [response for status, _, response in answers if status in (429, 503)]


def test_a_burst_beyond_the_image_queue_is_refused_fast_and_every_accepted_request_completes(gateway, burst):
    statuses = [status for status, _, _ in burst.answers]
    assert set(statuses) <= {200, 429, 503}, statuses
    accepted = [response for status, _, response in burst.answers if status == 200]
    assert 1 <= len(accepted) <= BURST - 1, statuses
    assert all(gateway.stored(response.json()["file_key"]) for response in accepted)
    assert len(accepted) >= IMAGE_MAX_CONCURRENCY
    refused_in = [seconds for status, seconds, _ in burst.answers if status != 200]
    FIGURES.timing("burst: slowest refusal", max(refused_in))
    assert max(refused_in) < FAST_S
    assert all(response.json()["error"] for response in refusals(burst.answers))
    assert all(status == 200 and seconds < LIVEZ_BOUND_S for status, seconds in burst.livez)
    assert burst.rss_growth < RSS_GROWTH_BOUND_MB


def test_a_busy_image_service_is_answered_503_with_retry_after(burst):
    # The image service refuses beyond its max_concurrency with BentoML's 429 {"error": "Too many requests"};
    # `services.gateway.forward` passes that on as it is: a 429 without Retry-After, which the contract
    # reserves for the client's own rate limit.
    answered = [(response.status_code, response.headers.get("Retry-After")) for response in refusals(burst.answers)]
    assert answered, "the burst did not overflow the image service"
    assert all(status == 503 and retry_after for status, retry_after in answered), answered


def test_a_flood_while_a_service_hangs_gets_every_answer_in_bounded_time_and_never_a_500(flood):
    statuses = [status for status, _, _ in flood.answers]
    slowest = max(seconds for _, seconds, _ in flood.answers)
    FIGURES.timing("flood: slowest answer", slowest)
    assert set(statuses) <= {429, 503}, {status: statuses.count(status) for status in set(statuses)}
    assert slowest < BACKEND_TIMEOUT_S + 10
    # No unbounded queue: whatever the gateway could not hold was refused at once.
    refused_fast = sum(1 for _, seconds, _ in flood.answers if seconds < FAST_S)
    assert refused_fast >= len(flood.answers) - flood.capacity


def test_a_flood_is_refused_with_retry_after(flood):
    # Beyond the gateway's max_concurrency, BentoML's own middleware answers 429 {"error": "Too many
    # requests"} before the gateway's code runs: no Retry-After.
    answered = [(response.status_code, response.headers.get("Retry-After")) for response in refusals(flood.answers)]
    missing = [status for status, retry_after in answered if not retry_after]
    assert not missing, f"{len(missing)} of {len(answered)} refusals without Retry-After ({set(missing)})"


def test_livez_and_memory_hold_during_a_flood(flood):
    FIGURES.timing("flood: slowest /livez", max(seconds for _, seconds in flood.livez))
    assert flood.livez and all(status == 200 and seconds < LIVEZ_BOUND_S for status, seconds in flood.livez)
    FIGURES.memory({"Gateway during the flood (growth)": flood.rss_growth})
    assert flood.rss_growth < RSS_GROWTH_BOUND_MB


# Slow senders.

STALLED_SENDERS = 60
STALLED_BODY_BYTES = 10 * 2**20
STALLED_SENT_BYTES = 9 * 2**20


def stalled_upload(url: str) -> tuple[socket.socket, float]:
    """A connection that declares a 10 MB upload, sends 9 MB of it and stops; returns it and when it was opened."""
    host, port = url.removeprefix("http://").split(":")
    opened = time.monotonic()
    connection = socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT_S + 60)
    head = (
        f"POST /caption_image HTTP/1.1\r\nHost: {host}\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {STALLED_BODY_BYTES}\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="image"; filename="slow.png"\r\n\r\n'
    ).encode()
    connection.sendall(head + b"\0" * (STALLED_SENT_BYTES - len(head)))
    return connection, opened


def answer_and_close(connection: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection (bounded by the socket's timeout), and when
    it closed it."""
    answer = b""
    with connection:
        while chunk := connection.recv(65536):
            answer += chunk
    return answer, time.monotonic()


def test_stalled_bodies_are_dropped_at_the_deadline_and_cost_no_memory(gateway):
    process = gateway.process("Gateway")
    idle_mb = process.memory_info().rss / 2**20
    peak_mb = idle_mb

    def sample_until_done(futures) -> None:
        nonlocal peak_mb
        while not all(future.done() for future in futures):
            peak_mb = max(peak_mb, process.memory_info().rss / 2**20)
            time.sleep(0.05)

    # One thread per sender, so that every connection is read from the moment the server answers it.
    with ThreadPoolExecutor(max_workers=STALLED_SENDERS) as pool:
        opening = [pool.submit(stalled_upload, gateway.url) for _ in range(STALLED_SENDERS)]
        sample_until_done(opening)
        stalled = [future.result() for future in opening]
        closing = [pool.submit(answer_and_close, connection) for connection, _ in stalled]
        sample_until_done(closing)
        answers = [future.result() for future in closing]
    held_s = [closed - opened for (_, opened), (_, closed) in zip(stalled, answers, strict=True)]
    FIGURES.requests += STALLED_SENDERS
    FIGURES.memory({f"Gateway growth, {STALLED_SENDERS} stalled 10 MB bodies": peak_mb - idle_mb})
    FIGURES.timing(f"stalled bodies: longest held (deadline {BODY_TIMEOUT_S:g} s)", max(held_s))
    assert all(answer.startswith(b"HTTP/1.1 408") for answer, _ in answers), {answer[:40] for answer, _ in answers}
    assert all(b"not received within" in answer for answer, _ in answers)
    assert peak_mb - idle_mb < RSS_GROWTH_BOUND_MB
    # The gateway still answers everyone else.
    assert FIGURES.record(gateway.caption()).status_code == 200

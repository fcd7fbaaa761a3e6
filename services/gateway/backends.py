"""Calls from the gateway to the model services, and what their failures mean to a client.

A model service may be scaled to zero, starting, busy, hung or dead; each becomes a 503 with Retry-After
naming the capability, so a client knows it may retry and when. Its own 4xx (a request it refuses) passes
through with its message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar

import aiohttp
import httpx
from bentoml.exceptions import BentoMLException

from genmedia import logger
from genmedia.contract.errors import BACKEND_RETRY_AFTER_S, BUSY_RETRY_AFTER_S, ServiceError, Unavailable
from genmedia.metrics import metrics
from genmedia.model_loading import stored_model

Result = TypeVar("Result")
# Backoff between attempts to reach a model service that is restarting.
RECONNECT_FIRST_DELAY_S = 0.25
RECONNECT_MAX_DELAY_S = 5.0


async def forward(service: str, capability: str, call: Callable[[], Awaitable[Result]], timeout_s: float) -> Result:
    """Make a model service call; its failures become errors a client can act on."""
    metrics().gateway_forwarded.labels(service).inc()
    try:
        return await asyncio.wait_for(call_while_restarting(call), timeout_s)
    except BentoMLException as error:
        status = int(error.error_code)
        message = backend_message(str(error))
        if status == 429:
            # The service's queue is full (its max_concurrency): not the client's rate limit.
            raise Unavailable(
                f"{capability} is busy; retry in {BUSY_RETRY_AFTER_S} s.", retry_after=BUSY_RETRY_AFTER_S
            ) from None
        if status < 500 and message:
            raise ServiceError(message, status=status) from None
        if status == 503 and message:
            # The service answered, e.g. storage is down and its output is spooled: pass its advice on.
            raise Unavailable(message, retry_after=BACKEND_RETRY_AFTER_S) from None
        failure = f"answered {status}"
    except (TimeoutError, httpx.TimeoutException):
        failure = f"did not answer within {timeout_s} s"
    except (httpx.HTTPError, aiohttp.ClientError, OSError):
        # BentoML's client is aiohttp: a service killed mid-call is a ServerDisconnectedError.
        failure = "is not reachable (starting, restarting or down)"
    except asyncio.CancelledError:
        # aiohttp cancels the calls waiting for a connection when BentoML's client closes its session (every
        # runner_connection.max_requests calls): the call failed, this request was not cancelled.
        if asyncio.current_task().cancelling():
            raise
        failure = "dropped the call"
    metrics().backend_unavailable.labels(service).inc()
    logger.warning("%s %s", service, failure)
    raise Unavailable(
        f"{capability} is unavailable right now; retry in {BACKEND_RETRY_AFTER_S} s.", retry_after=BACKEND_RETRY_AFTER_S
    )


async def call_while_restarting(call: Callable[[], Awaitable[Result]]) -> Result:
    """The call, made again while the service cannot be connected to (crashed and being restarted by
    BentoML, which keeps its socket), so a request waits for it rather than failing; the caller's timeout
    bounds the wait. Safe to repeat: outputs are content-addressed, so a call that did finish is found in
    storage by its repeat, and captions are pure."""
    delay_s = RECONNECT_FIRST_DELAY_S
    while True:
        try:
            return await call()
        except (aiohttp.ClientConnectionError, httpx.ConnectError, ConnectionError) as error:
            logger.info("model service not connectable (%s); retrying in %.1f s", type(error).__name__, delay_s)
        await asyncio.sleep(delay_s)
        delay_s = min(2 * delay_s, RECONNECT_MAX_DELAY_S)


async def stream_lines(service: Any, route_name: str, body: dict) -> AsyncGenerator[str, None]:
    """The lines a model service's streaming route answers to `body`, read over BentoML's own session to it.

    Not through the proxy's route method: BentoML 1.4.39's client never releases a stream's aiohttp response
    (`_parse_stream_response` has no `finally`), and the connection, still checked out, keeps the response
    alive, so not even the garbage collector closes it. A caller that stops reading (a canceled job) would
    leave the service generating to the end. Here the response is released when this generator is closed:
    an unfinished answer's connection is closed with it, and the service sees its caller go."""
    client = service.to_async
    session = await client._session_manager.get_session()  # private: the one session BentoML made for `service`
    async with session.post(client.endpoints[route_name].route, json=body) as response:
        if not response.ok:
            raise BentoMLException(await response.text(), error_code=HTTPStatus(response.status))
        async for line in response.content:
            yield line.decode()


def backend_message(text: str) -> str | None:
    """The `error` message of a model service's JSON error body, if it is one."""
    body = text.partition(": ")[2] if text.startswith("Error making request") else text
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    return parsed.get("error") if isinstance(parsed, dict) else None


def served_model(role: str) -> tuple[str, dict] | None:
    """The store tag and metadata of the model a service will serve, read without loading weights.

    With them the gateway resolves a request's defaults and content key exactly as the service will, and
    answers a cached result without waking it. None (no cache in the gateway) when the store lacks it.
    """
    try:
        model = stored_model(role)
    except BentoMLException as error:
        logger.warning("no result cache for %s in the gateway: %s", role, error)
        return None
    return str(model.tag), dict(model.info.metadata)

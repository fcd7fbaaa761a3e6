"""Session-wide fixtures: one tiny model store for every test that serves a model, the two gateways, and one
Redis for the tests that share rate limits."""

from __future__ import annotations

import pytest

from testbed.redis_server import RedisServer, redis_server_program
from testbed.servers import server_missing
from testbed.serving import import_tiny_models
from tests.gateways import KEY, ORIGIN, OTHER_KEY, STRICT_KEYS, start_gateway


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A BENTOML_HOME holding the tiny profile of all three models, built once per test session."""
    home = tmp_path_factory.mktemp("bentoml-home")
    import_tiny_models(home)
    return home


@pytest.fixture(scope="session")
def gateway(tiny_store, tmp_path_factory):
    server = start_gateway(
        tiny_store,
        tmp_path_factory.mktemp("gateway"),
        GATEWAY_API_KEYS=f"{KEY},{OTHER_KEY}",
        RATE_LIMIT_PER_MINUTE="1000",
        CORS_ORIGINS=ORIGIN,
        BLOCKED_IPS="203.0.113.0/24",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def strict_gateway(tiny_store, tmp_path_factory):
    server = start_gateway(
        tiny_store,
        tmp_path_factory.mktemp("strict-gateway"),
        GATEWAY_API_KEYS=",".join(STRICT_KEYS),
        RATE_LIMIT_PER_MINUTE="3",
        TRUSTED_PROXIES="127.0.0.1",
        BLOCKED_IPS="198.51.100.0/24",
        BACKEND_TIMEOUT_S="5",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real `redis-server` on a free loopback port for the whole session (empty, nothing persisted)."""
    program = redis_server_program()
    if program is None:
        server_missing("redis-server is not installed (Debian package redis-server; `make servers` installs it)")
    server = RedisServer(program, tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on loopback for the whole session; its tests skip (or fail in CI) without one."""
    from testbed.postgres_server import PostgresServer, PostgresUnavailable
    from testbed.servers import server_missing

    try:
        server = PostgresServer().start()
    except PostgresUnavailable as error:
        server_missing(f"PostgreSQL: {error}")
    yield server
    server.stop()

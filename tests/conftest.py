"""Session-wide fixtures: one tiny model store for every test that serves a model, one Redis for those that
share rate limits."""

from __future__ import annotations

import pytest

from testbed.redis_server import RedisServer, redis_server_program
from testbed.servers import server_missing
from testbed.serving import import_tiny_models


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A BENTOML_HOME holding the tiny profile of all three models, built once per test session."""
    home = tmp_path_factory.mktemp("bentoml-home")
    import_tiny_models(home)
    return home


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real `redis-server` on a free loopback port for the whole session (empty, nothing persisted)."""
    program = redis_server_program()
    if program is None:
        server_missing("redis-server is not installed (Debian package redis-server; `make servers` installs it)")
    server = RedisServer(program, tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()

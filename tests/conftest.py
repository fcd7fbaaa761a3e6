"""Session-wide fixtures: one tiny model store for every test that serves a model."""

from __future__ import annotations

import pytest

from testbed.serving import import_tiny_models


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A BENTOML_HOME holding the tiny profile of all three models, built once per test session."""
    home = tmp_path_factory.mktemp("bentoml-home")
    import_tiny_models(home)
    return home


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

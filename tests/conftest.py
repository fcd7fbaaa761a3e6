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

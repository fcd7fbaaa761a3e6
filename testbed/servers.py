"""Real servers the tests need from Debian's packages (PostgreSQL, Redis, Chromium): found, or skipped loudly.

`make test` installs what is missing (`make servers`). Where a server still cannot be had, its tests skip
with a message that says what is missing, unless `GENMEDIA_REQUIRE_SERVERS=1` (set by `.ci/run`), which
turns that skip into a failure: CI never passes by skipping a real server.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRE_SERVERS = os.environ.get("GENMEDIA_REQUIRE_SERVERS") == "1"


def server_missing(message: str):
    """Skip the calling test (or fixture) because a real server is missing; fail instead under CI."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{message} (GENMEDIA_REQUIRE_SERVERS=1: a missing server fails the run)", pytrace=False)
    pytest.skip(message)


def find_program(name: str, *search: str) -> Path | None:
    """`name` on the PATH or in one of the `search` directories (Debian puts PostgreSQL's off the PATH)."""
    found = shutil.which(name)
    if found:
        return Path(found)
    for directory in search:
        for candidate in sorted(Path("/").glob(directory.lstrip("/")), reverse=True):
            if (candidate / name).is_file():
                return candidate / name
    return None

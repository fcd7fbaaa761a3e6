"""The gateways the test session serves, shared by every module that needs one (each start costs most of a
minute on two cores): `gateway` (two API keys, a generous limit, CORS, a blocked range it must not be
tricked into applying) and `strict_gateway` (a limit of 3 a minute, loopback as a trusted proxy, a blocked
range, a short backend timeout for fault injection). The fixtures are in `tests/conftest.py`."""

from __future__ import annotations

from pathlib import Path

from testbed.serving import Server, base_env

KEY = "main-key-0123456789"
OTHER_KEY = "other-key-9876543210"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "https://app.example.com"
STRICT_KEYS = ("strict-key-one-0123", "strict-key-two-0123", "strict-key-three-0123")
FORWARDED = "genmedia_gateway_forwarded_total"


def start_gateway(tiny_store: Path, work: Path, **settings: str) -> Server:
    """`bentoml serve services.gateway:Gateway` with its model services, storing under `work`."""
    # Each gateway its own job store: on a shared one, another gateway's runners would take its jobs and answer
    # them with their own storage (JOB_STORE_URL's default is a file under the repository root).
    env = base_env(
        tiny_store,
        LOCAL_STORAGE_DIR=str(work / "files"),
        SPOOL_DIR=str(work / "spool"),
        JOB_STORE_URL=f"sqlite:///{work / 'jobs.db'}",
        **settings,
    )
    return Server("services.gateway:Gateway", env, work / "server.log").start(ready_timeout_s=300)

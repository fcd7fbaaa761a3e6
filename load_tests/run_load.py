"""`make load`: locust against a gateway of tiny models on loopback; exits non-zero on any failure.

It imports the tiny profile into `.data/load-store` (once: the importer skips what is there), serves
`services.gateway:Gateway` on a free 127.0.0.1 port with an API key and a rate limit locust cannot reach,
runs `load_tests/locustfile.py` headless for a bounded time and number of users, then stops the server.
Locust's CSV statistics land in `load_tests/locust_*.csv` (ignored by git); the summary printed here gives
each route's p50, p95 and failure rate. Refusals the scenario asks for (400s) are successes; any other
failure, on any route, fails the run.

    python -m load_tests.run_load [--users 8] [--spawn-rate 2] [--time 60s]
"""

from __future__ import annotations

import argparse
import csv
import io
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from testbed.serving import REPO_ROOT, Server, base_env, import_tiny_models

STORE = REPO_ROOT / ".data" / "load-store"
WORK = REPO_ROOT / ".data" / "load-run"
CSV_PREFIX = REPO_ROOT / "load_tests" / "locust"
LOCUST = str(Path(sys.executable).with_name("locust"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.run_load", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8, help="concurrent simulated users (default 8)")
    parser.add_argument("--spawn-rate", type=float, default=2, help="users started per second (default 2)")
    parser.add_argument("--time", default="60s", help="how long the load runs (default 60s)")
    arguments = parser.parse_args(argv)

    STORE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(WORK, ignore_errors=True)  # the last run's files, which would all be cache hits
    WORK.mkdir(parents=True)
    print(import_tiny_models(STORE), end="", flush=True)
    api_key = secrets.token_urlsafe(24)
    env = base_env(
        STORE,
        GATEWAY_API_KEYS=api_key,
        RATE_LIMIT_PER_MINUTE="100000",
        LOCAL_STORAGE_DIR=str(WORK / "files"),
        SPOOL_DIR=str(WORK / "spool"),
    )
    gateway = Server("services.gateway:Gateway", env, WORK / "gateway.log")
    gateway.env["PUBLIC_BASE_URL"] = gateway.url
    print(f"serving the gateway on {gateway.url} (log: {gateway.log_path.relative_to(REPO_ROOT)})", flush=True)
    started = time.perf_counter()
    try:
        gateway.start(ready_timeout_s=300)
        warm_up(gateway.url, api_key)
        print(f"ready in {time.perf_counter() - started:.0f} s; locust: {arguments.users} users for {arguments.time}")
        locust = subprocess.run(
            [
                LOCUST,
                "-f",
                str(REPO_ROOT / "load_tests" / "locustfile.py"),
                "--headless",
                "--users",
                str(arguments.users),
                "--spawn-rate",
                str(arguments.spawn_rate),
                "--run-time",
                arguments.time,
                "--stop-timeout",
                "30",
                "--host",
                gateway.url,
                "--csv",
                str(CSV_PREFIX),
                "--only-summary",
            ],
            cwd=REPO_ROOT,
            env={**base_env(STORE), "GENMEDIA_API_KEY": api_key},
        )
    finally:
        gateway.stop()
    return report(locust.returncode)


def warm_up(url: str, api_key: str, timeout_s: float = 300) -> None:
    """One request per route until each answers 200.

    The gateway reports ready without probing the model services (so that a probe never wakes a GPU that
    scaled to zero), so right after a start they may still be loading; locust should measure them running.
    """
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "gray").save(buffer, format="PNG")
    requests = {
        "/generate_image": {"json": {"prompt": "warm-up", "width": 64, "height": 64}},
        "/synthesize_speech": {"json": {"text": "Warm-up."}},
        "/caption_image": {"files": {"image": ("warm-up.png", buffer.getvalue(), "image/png")}},
    }
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s) as client:
        for route, request in requests.items():
            while (response := client.post(route, **request)).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{route} still answers {response.status_code}: {response.text[:300]}")
                time.sleep(2)


def report(locust_status: int) -> int:
    """Each route's p50, p95 and failure rate from locust's CSV; non-zero when anything failed."""
    with open(f"{CSV_PREFIX}_stats.csv", newline="") as stats_file:
        rows = list(csv.DictReader(stats_file))
    print(f"\n{'route':<48} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'failed':>8}")
    failures = 0
    for row in rows:
        requests, failed = int(row["Request Count"]), int(row["Failure Count"])
        name = "all routes" if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}"
        rate = failed / requests if requests else 0.0
        print(f"{name:<48} {requests:>8} {row['50%']:>8} {row['95%']:>8} {rate:>8.1%}")
        if row["Name"] != "Aggregated":
            failures += failed
    print(f"\nlocust CSV: {CSV_PREFIX.relative_to(REPO_ROOT)}_*.csv")
    if failures or locust_status != 0:
        print(f"FAILED: {failures} failed request(s), locust exit status {locust_status}", file=sys.stderr)
        with open(f"{CSV_PREFIX}_failures.csv", newline="") as failures_file:
            for failure in csv.DictReader(failures_file):
                print(f"  {failure['Occurrences']}x {failure['Name']}: {failure['Error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

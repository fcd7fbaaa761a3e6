"""`make soak`: the whole composition for a few minutes under mixed traffic and rolling faults.

The tiny-model gateway and its three model services (`testbed.composition`, storing into the
Supabase Storage stand-in) get a few users' worth of traffic (new and repeated images and speech, captions,
some bad requests) while a fault thread cycles through: a storage outage, transient upload failures, hung
uploads, a hung speech service, a burst beyond the image service's queue, and once a SIGKILL of the image
service. Some of the traffic is durable jobs (`/jobs/...`), which must each end `succeeded` through all of
it. At the end storage is left up until the spool drains, and it prints the figures:

    requests tried, faults injected, 5xx seen (expected 503 + Retry-After during a fault, or unintended),
    outputs spooled during outages and outputs lost, jobs submitted, succeeded, failed and lost, peak RSS
    per service, and the gateway's RSS growth.

It exits 1 on any lost output or job, any unintended 5xx or a request that got no answer, or gateway memory
that grew more than --rss-growth-mb.

    python -m load_tests.soak [--minutes 3] [--users 6]
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from testbed import jobs
from testbed.composition import (
    AUTH,
    BACKEND_TIMEOUT_S,
    DRAIN_WAIT_S,
    STORAGE_RETRY_BUDGET_S,
    STORAGE_TIMEOUT_S,
    SUPABASE_KEY,
    Composition,
    FaultyStorage,
    MemoryWatch,
    Suspended,
    new_seed,
    tiny_png,
)
from testbed.figures import FIGURES
from testbed.serving import import_tiny_models

SPOOLED_KEY = re.compile(r"'((?:images|audio)/[0-9a-f]{64}\.[a-z]+)'")
SOAK_JOB_CONCURRENCY = 2
# How long the jobs still unfinished when the traffic stops have to end (each waits out its faults).
JOBS_SETTLE_S = 300
# After a fault ends, answers for requests that were in flight still carry its marks.
FAULT_TAIL_S = BACKEND_TIMEOUT_S + 3 * (STORAGE_RETRY_BUDGET_S + STORAGE_TIMEOUT_S) + 5


def says_why(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("error"))


class Faults:
    """When faults were active, so that each answer can be judged against the faults it lived through."""

    def __init__(self):
        self._windows: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def open(self, duration_s: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._windows.append((now, now + duration_s + FAULT_TAIL_S))

    def during(self, started: float, ended: float) -> bool:
        with self._lock:
            return any(start <= ended and started <= end for start, end in self._windows)


class Soak:
    def __init__(self, composition: Composition, storage: FaultyStorage, minutes: float, users: int):
        self.composition = composition
        self.storage = storage
        self.midway = time.monotonic() + minutes * 30
        self.deadline = time.monotonic() + minutes * 60
        self.users = users
        self.faults = Faults()
        self.seen_images: list[dict] = []
        self.seen_speech: list[dict] = []
        self.job_ids: list[str] = []
        self.no_answer = 0

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    # Traffic.

    def user(self, number: int) -> None:
        rng = random.Random(number)
        with httpx.Client(base_url=self.composition.url, headers=AUTH, timeout=120) as client:
            while self.running():
                self.send(client, rng)

    def send(self, client: httpx.Client, rng: random.Random, overload: bool = False) -> None:
        choice = (
            "image"
            if overload
            else rng.choices(
                ["image", "image again", "speech", "speech again", "caption", "bad", "job"], [30, 12, 16, 5, 20, 7, 10]
            )[0]
        )
        if choice == "job":
            return self.submit_job(client, rng)
        if choice == "image again" and self.seen_images:
            route, kwargs = "/generate_image", {"json": rng.choice(self.seen_images)}
        elif choice == "speech again" and self.seen_speech:
            route, kwargs = "/synthesize_speech", {"json": rng.choice(self.seen_speech)}
        elif choice.startswith("speech"):
            body = {"text": f"Soak test number {rng.randrange(10**6)}. All is well.", "seed": new_seed()}
            route, kwargs = "/synthesize_speech", {"json": body}
        elif choice == "caption":
            route, kwargs = "/caption_image", {"files": {"image": ("soak.png", tiny_png(), "image/png")}}
        elif choice == "bad":
            route, kwargs = "/generate_image", {"json": {"prompt": "", "width": 7}}
        else:
            side = rng.choice([64, 128, 256])
            body = {"prompt": f"soak {rng.randrange(10**6)}", "width": side, "height": side, "seed": new_seed()}
            route, kwargs = "/generate_image", {"json": body}
        started = time.monotonic()
        try:
            response = client.post(route, **kwargs)
        except httpx.HTTPError as error:
            self.no_answer += 1
            FIGURES.record_failure(f"POST {route} -> no answer ({type(error).__name__})")
            return
        FIGURES.record(response, fault=self.faults.during(started, time.monotonic()), overload=overload)
        if response.status_code == 503 and (spooled := SPOOLED_KEY.search(response.text)):
            FIGURES.spooled(spooled.group(1))
        if response.status_code == 200 and "json" in kwargs and len(self.seen_images) < 200:
            (self.seen_images if route == "/generate_image" else self.seen_speech).append(kwargs["json"])
        if response.status_code >= 400 and not says_why(response):
            FIGURES.record_failure(f"POST {route} -> {response.status_code} without an error message", answered=True)

    def submit_job(self, client: httpx.Client, rng: random.Random) -> None:
        if rng.random() < 0.7:
            kind, body = "generate_image", {"prompt": f"soak job {rng.randrange(10**6)}", "width": 64, "height": 64}
        else:
            kind, body = "synthesize_speech", {"text": f"Soak job {rng.randrange(10**6)}."}
        started = time.monotonic()
        try:
            response = client.post(f"/jobs/{kind}", json=body)
        except httpx.HTTPError as error:
            self.no_answer += 1
            FIGURES.record_failure(f"POST /jobs/{kind} -> no answer ({type(error).__name__})")
            return
        FIGURES.record(response, fault=self.faults.during(started, time.monotonic()))
        if response.status_code == 202:
            self.job_ids.append(response.json()["id"])

    def settle_jobs(self) -> dict[str, int]:
        """Wait for every accepted job to end; counts by final status, and `lost`: gone, or never ending."""
        counts = {"submitted": len(self.job_ids), "succeeded": 0, "failed": 0, "canceled": 0, "lost": 0}
        deadline = time.monotonic() + JOBS_SETTLE_S
        for job_id in self.job_ids:
            try:
                job = jobs.wait_for(self.composition.url, job_id, AUTH, timeout_s=max(1, deadline - time.monotonic()))
                counts[job["status"]] += 1
                if job["status"] == "failed":
                    print(f"soak: job {job_id} failed: {job['error']}", flush=True)
            except (AssertionError, httpx.HTTPError) as error:
                counts["lost"] += 1
                FIGURES.record_failure(f"job {job_id} lost: {str(error).splitlines()[0]}")
        return counts

    def watch_spool(self) -> None:
        """Every output that ever sits in a spool is one that must reach storage in the end."""
        while self.running():
            for capability in ("images", "audio"):
                FIGURES.spooled(*self.composition.spooled(capability))
            time.sleep(0.5)

    # Faults.

    def inject_faults(self) -> None:
        steps = itertools.cycle(
            [self.storage_outage, self.transient_uploads, self.hung_uploads, self.hung_speech, self.burst]
        )
        killed = False
        time.sleep(10)
        while self.running():
            if not killed and time.monotonic() > self.midway:
                self.kill_image_service()
                killed = True
            else:
                next(steps)()
            time.sleep(12)

    def storage_outage(self) -> None:
        self.faults.open(6)
        FIGURES.inject()
        self.storage.set_down(True)
        time.sleep(6)
        self.storage.set_down(False)

    def transient_uploads(self) -> None:
        self.faults.open(5)
        FIGURES.inject(3)
        self.storage.fail_next_uploads(3, random.choice([500, 503, 429]))

    def hung_uploads(self) -> None:
        self.faults.open(5)
        FIGURES.inject(2)
        self.storage.hang_next_uploads(2, 3 * STORAGE_TIMEOUT_S)

    def hung_speech(self) -> None:
        self.faults.open(BACKEND_TIMEOUT_S + 2)
        FIGURES.inject()
        with Suspended(self.composition.process("TextToSpeech")):
            time.sleep(BACKEND_TIMEOUT_S + 2)

    def burst(self) -> None:
        rng = random.Random()
        with (
            httpx.Client(base_url=self.composition.url, headers=AUTH, timeout=120) as client,
            ThreadPoolExecutor(max_workers=24) as pool,
        ):
            list(pool.map(lambda _: self.send(client, rng, overload=True), range(24)))

    def kill_image_service(self) -> None:
        FIGURES.inject()
        self.faults.open(60)
        started = time.monotonic()
        self.composition.process("TextToImage").kill()
        time.sleep(5)
        back = self.composition.wait_until_serving(("images",), timeout_s=240)
        FIGURES.timing("image service back in", time.monotonic() - started)
        self.faults.open(0)
        return back


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long the traffic runs (default 3)")
    parser.add_argument("--users", type=int, default=6, help="concurrent users (default 6)")
    parser.add_argument("--rss-growth-mb", type=float, default=150.0, help="allowed gateway RSS growth (150)")
    parser.add_argument("--home", type=Path, help="a BENTOML_HOME with the tiny models (default: build one)")
    arguments = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="genmedia-soak-") as scratch:
        work = Path(scratch)
        home = arguments.home
        if home is None:
            home = work / "bentoml-home"
            print("soak: building the tiny models ...", flush=True)
            import_tiny_models(home)
        with FaultyStorage(service_key=SUPABASE_KEY) as storage:
            # Jobs leave room on the image service (max_concurrency IMAGE_MAX_CONCURRENCY here) for the sync
            # users, as JOB_CONCURRENCY 4 does beside its production max_concurrency of 32.
            composition = Composition(home, work, storage, JOB_CONCURRENCY=str(SOAK_JOB_CONCURRENCY))
            print("soak: starting the composition ...", flush=True)
            started = time.monotonic()
            composition.start()
            FIGURES.timing("composition start", time.monotonic() - started)
            watch = MemoryWatch(composition).start()
            job_counts = {"submitted": 0, "lost": 0}
            gateway_rss_start = composition.rss_mb("Gateway")
            try:
                soak = Soak(composition, storage, arguments.minutes, arguments.users)
                print(f"soak: {arguments.users} users for {arguments.minutes:g} min, with faults ...", flush=True)
                threads = [threading.Thread(target=soak.user, args=(n,)) for n in range(arguments.users)]
                threads += [threading.Thread(target=soak.inject_faults), threading.Thread(target=soak.watch_spool)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                storage.clear_faults()
                storage.set_down(False)
                for capability in ("images", "audio"):
                    FIGURES.spooled(*composition.spooled(capability))
                print("soak: waiting for the jobs to end ...", flush=True)
                job_counts = soak.settle_jobs()
                print("soak: waiting for the spool to drain ...", flush=True)
                composition.wait_until_stored(sorted(FIGURES.spooled_keys), timeout_s=DRAIN_WAIT_S + 60)
            except AssertionError as error:
                print(f"soak: {error}", flush=True)
            finally:
                gateway_rss_growth = composition.rss_mb("Gateway") - gateway_rss_start
                watch.stop()
                FIGURES.memory(watch.peak)
                FIGURES.settle(composition.stored)
                composition.stop()
                log = composition.log_path.read_text(errors="replace")

    print("\n=== soak figures ===")
    print(FIGURES.render())
    print(f"gateway RSS growth: {gateway_rss_growth:.0f} MB (allowed {arguments.rss_growth_mb:.0f} MB)")
    print("jobs: " + ", ".join(f"{count} {name}" for name, count in job_counts.items()))
    problems = []
    if job_counts["lost"]:
        problems.append(f"{job_counts['lost']} job(s) lost")
    if FIGURES.lost_keys:
        problems.append(f"{len(FIGURES.lost_keys)} output(s) lost")
    if FIGURES.unintended_5xx:
        problems.append(f"{FIGURES.unintended_5xx} unintended 5xx or unanswered request(s)")
    if gateway_rss_growth > arguments.rss_growth_mb:
        problems.append(f"gateway memory grew {gateway_rss_growth:.0f} MB")
    if SUPABASE_KEY in log or AUTH["Authorization"].split()[1] in log:
        problems.append("a secret is in the server log")
    print("soak: " + ("FAILED: " + "; ".join(problems) if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: how close serving comes to the bare model (issues #9 and #18).

Every row of the table is a ratio A ÷ B of two things measured here, on 127.0.0.1, with the `bench` profile
(the real models' sizes, random weights: `models/bench.py`), images at 128 x 128 and one step:

- serving overhead (target ≤ 1.05): `/generate_image` seconds through the gateway, end to end ÷ the bare
  pipeline's for the same request in a plain process (`load_tests/bare.py`: the same loader, generation, PNG
  encoding and upload to local storage);
- throughput under load (≥ 0.95): images/s with 4 concurrent clients through the gateway ÷ images/s of the
  bare pipeline called back to back;
- adaptive batching (reported): captions/s with 8 concurrent clients, the BLIP-base-sized captioner as
  served ÷ the same with CAPTION_MAX_BATCH_SIZE=1;
- cold start (≤ 1.3): seconds from `bentoml serve` (the image service alone) to its first image ÷ seconds
  for a bare process to import, load and generate once;
- cache hit (≤ 0.05): seconds of a repeated seeded request (answered from storage) ÷ its fresh generation;
- memory (≤ 1.3): peak RSS of the image service's process tree ÷ peak RSS of the bare process;
- caption speed, BLIP-base (≥ 2.0) and BLIP-large (≥ 1.6): captions/s of the captioner service with one
  client (upload after upload) ÷ captions/s of stock transformers `generate` in a plain process on the same
  image files (`load_tests/bare_captioner.py`), with as many torch threads as the service reserves cores;
  the note says whether every caption was the same on both sides;
- caption memory (≤ 1.3): peak RSS of the BLIP-large-sized captioner service's tree ÷ the bare process's.
- batched images (on a GPU ≥ 1.5; on a CPU reported): images/s of `n=4` in one batched pipeline call
  (the gateway's `/v1/images/generations`, which asks the image service's `/generate_images`) ÷ images/s
  of four `n=1` calls back to back;
- job overhead (≤ 1.05): seconds of a durable job, submit to `succeeded` on its event stream ÷ the same
  image through `/generate_image`, on the same gateway;
- safety checker (≤ 0.05 on a GPU, reported on a CPU): the image safety checker's seconds per image ÷ the
  pipeline's seconds for that image, both timed in the bare process (`bare.py --safety-checker`). The
  servers of the other rows run with `SAFETY_CHECKER=off`, so that both sides of those rows do the same work.

Method. The machine may be shared and its speed drifts, so each row is at least five pairs of
measurements, interleaved (A B, B A, A B, ...) after a warm-up of each side, and the two sides of a pair
never run at the same time. Each pair gives a ratio; a row's ratio is the median of its pairs (the row is
met when the median is), shown with their min–max; A and B are each side's median. Peak RSS is sampled
(psutil, every 0.1 s, summed over a process and its descendants). On 2 CPU cores where a bench image takes
~6 s (a plain matrix product ~120 GFLOPS) a run takes 25-26 minutes, longer on slower cores (RESULTS.md).

Model stores. BENTOML_HOMEs under `.data/bench-store`, built on the first run and reused (the importer
skips what is already there): `images` holds the bench text-to-image with tiny speech and captioning models
(the gateway starts all three services and only images are measured: three bench-sized models beside the
bare pipeline would crowd the memory and the cores); `captions` and `captions-large` hold the BLIP-base- and
BLIP-large-sized captioners, each served alone, and `safety` the bench safety checker (CLIP
ViT-L/14), loaded by the bare process beside the images' pipeline. The table is printed and written to
`load_tests/RESULTS.md`, whose hand-written section on missed targets is kept across runs. On a CUDA
machine the same script measures the GPU path for images: the services and the bare process both pick the
device with `genmedia.model_loading.pick_device` (the memory row then compares host memory, not GPU memory);
captions run on the CPU on both sides there too, as the captioner is served.

    python -m load_tests.bench                    # the benchmark (make bench)
    python -m load_tests.bench --only captions    # some rows only (cold-start, gateway, batching, captions,
                                                  # safety); no RESULTS.md
    python -m load_tests.bench --smoke            # the same code paths on tiny models, one sample each

The stores are reused as long as they hold bench-profile models: after changing `models/bench.py`, delete
`.data/bench-store` to rebuild them. Each run's server logs are under `.data/bench-run`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

from load_tests.bare import ONCE_REQUEST
from services.image_captioning import CPUS as CAPTIONER_CPUS
from testbed import jobs
from testbed.serving import REPO_ROOT, Server, base_env

A = TypeVar("A")
B = TypeVar("B")

STORES = REPO_ROOT / ".data" / "bench-store"
WORK = REPO_ROOT / ".data" / "bench-run"  # logs and generated files of the last run
RESULTS = REPO_ROOT / "load_tests" / "RESULTS.md"
ANALYSIS_HEADING = "## Why targets are missed"

GATEWAY = "services.gateway:Gateway"
IMAGE_SERVICE = "services.text_to_image:TextToImage"
CAPTIONER = "services.image_captioning:ImageCaptioning"

PROMPT = "a lighthouse at dawn"
# The serving rows compare the same pipeline call on both sides; 128² keeps a full run near 10 minutes on
# 2 cores (25 at 256²), and shows the per-request costs of serving that a longer call would hide.
SIDE = 128
STEPS = 1
IMAGE_CLIENTS = 4
CAPTION_CLIENTS = 8
# The captioner sizes of the caption speed rows, by the store each is built into (`models/bench.py`).
CAPTIONER_SIZES = {"BLIP-base": ("captions", "base"), "BLIP-large": ("captions-large", "large")}
READY_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 600


@dataclass(frozen=True)
class Plan:
    """How many samples each comparison takes (per side, after the warm-up)."""

    cold_starts: int = 5
    overhead_pairs: int = 5  # each also repeats its request, for the cache hit row
    throughput_rounds: int = 5  # each: at least IMAGE_CLIENTS images per side
    caption_rounds: int = 5  # each: CAPTION_CLIENTS captions per side
    caption_speed_pairs: int = 5
    caption_speed_images: int = 2  # per side and pair
    checked_images: int = 5  # images the safety checker row times
    # Where an image takes milliseconds (a GPU), more pairs and longer rounds keep each side of a comparison
    # at least this long, so that it measures more than timer noise and one-off hiccups.
    overhead_seconds: float = 20.0
    round_seconds: float = 5.0


# Each row, in the table's order: its unit, and its target on A ÷ B (None: reported, no target).
ROWS = {
    "serving overhead": ("s", ("<=", 1.05)),
    "throughput under load": ("img/s", (">=", 0.95)),
    "adaptive batching": ("captions/s", None),
    "cold start": ("s", ("<=", 1.3)),
    "cache hit": ("s", ("<=", 0.05)),
    "memory": ("GB", ("<=", 1.3)),
    "batched images": ("img/s", None),  # the target is set when measured: on a GPU only
    "safety checker": ("s", ("<=", 0.05)),  # the target is a GPU's; on a CPU the row is reported
    "caption speed, BLIP-base": ("captions/s", (">=", 2.0)),
    "caption speed, BLIP-large": ("captions/s", (">=", 1.6)),
    "caption memory": ("GB", ("<=", 1.3)),
    "job overhead": ("s", ("<=", 1.05)),
}

# What one server session measures, by the name `--only` takes.
SESSIONS = {
    "cold-start": ["cold start", "memory"],
    "gateway": ["serving overhead", "throughput under load", "cache hit", "batched images", "job overhead"],
    "batching": ["adaptive batching"],
    "safety": ["safety checker"],
    "captions": ["caption speed, BLIP-base", "caption speed, BLIP-large", "caption memory"],
}

FULL_PLAN = Plan()
SMOKE_PLAN = Plan(
    cold_starts=1,
    overhead_pairs=2,
    throughput_rounds=1,
    checked_images=2,
    caption_rounds=1,
    caption_speed_pairs=1,
    caption_speed_images=1,
    overhead_seconds=0.1,
    round_seconds=0.1,
)


@dataclass
class Row:
    """One line of the table: A ÷ B against a target (`("<=", 1.05)`, or None for a reported figure).

    `pairs` holds the ratio of each interleaved pair of measurements; the row's ratio is their median (a row
    is met when its median is), and the table shows their range. A and B are the medians of each side.
    """

    name: str
    unit: str
    target: tuple[str, float] | None
    a: float | None = None
    b: float | None = None
    pairs: list[float] = field(default_factory=list)
    note: str = ""
    error: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return median(self.pairs) if self.pairs else None

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        sense, bound = self.target
        return self.ratio <= bound if sense == "<=" else self.ratio >= bound

    @classmethod
    def named(cls, name: str) -> Row:
        unit, target = ROWS[name]
        return cls(name, unit, target)

    def measured(self, a_samples: list[float], b_samples: list[float]) -> None:
        """Both sides' samples, pair by pair (the i-th of A was taken next to the i-th of B)."""
        if len(a_samples) != len(b_samples) or not a_samples:
            raise BenchError(f"{self.name}: {len(a_samples)} and {len(b_samples)} samples do not pair")
        if not all(b_samples):
            raise BenchError(f"{self.name}: a side measured zero, no ratio")
        self.a, self.b = median(a_samples), median(b_samples)
        self.pairs = [a / b for a, b in zip(a_samples, b_samples, strict=True)]

    def cells(self) -> list[str]:
        if self.error is not None:
            return [self.name, "failed", "failed", "–", "–", f"{self.target_text()}: not measured"]
        verdict = {True: " met", False: " **missed**", None: ""}[self.met]
        return [
            self.name,
            f"{self.a:.3g} {self.unit}",
            f"{self.b:.3g} {self.unit}",
            f"{self.ratio:.3f}",
            f"{min(self.pairs):.3f}–{max(self.pairs):.3f} ({len(self.pairs)} pairs)",
            self.target_text() + verdict,
        ]

    def target_text(self) -> str:
        if self.target is None:
            return "reported"
        sense, bound = self.target
        return f"{'≤' if sense == '<=' else '≥'} {bound}"


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Model stores -------------------------------------------------------------------------------------------


def import_models(home: Path, profile: str, *roles: str, bench_captioner: str = "base") -> None:
    """`python -m models import --profile PROFILE --only ROLE ...` into `home` (skipped when already there)."""
    only = [argument for role in roles for argument in ("--only", role)]
    if profile == "bench":
        only += ["--bench-captioner", bench_captioner]
    result = subprocess.run(
        [sys.executable, "-m", "models", "import", "--profile", profile, *only],
        cwd=REPO_ROOT,
        env=base_env(home),
        capture_output=True,
        text=True,
    )
    for line in result.stdout.splitlines():
        log(f"{home.name}: {line}")
    if result.returncode != 0:
        raise BenchError(f"model import into {home} failed:\n{result.stderr[-3000:]}")


def prepare_stores(smoke: bool) -> tuple[Path, dict[str, Path], Path]:
    """The BENTOML_HOMEs of the image rows, of each captioner size and of the safety checker, built on the first run."""
    if smoke:
        home = STORES / "smoke"
        import_models(home, "tiny")
        return home, dict.fromkeys(CAPTIONER_SIZES, home), home
    images, safety = STORES / "images", STORES / "safety"
    # Each role is imported by one profile only, so a re-run finds every latest version already in place.
    # The image service needs a safety checker in its store even when it is off: the tiny one.
    import_models(images, "tiny", "text-to-speech", "image-captioning", "safety-checker")
    import_models(images, "bench", "text-to-image")
    captions = {}
    for size, (store, option) in CAPTIONER_SIZES.items():
        captions[size] = STORES / store
        import_models(captions[size], "bench", "image-captioning", bench_captioner=option)
    import_models(safety, "bench", "safety-checker")
    return images, captions, safety


@dataclass(frozen=True)
class StoredModel:
    tag: str
    path: str
    metadata: dict


def stored_text_to_image(home: Path) -> StoredModel:
    return stored(home, "text-to-image")


def stored(home: Path, role: str) -> StoredModel:
    """The model of `role` the services will load from `home`, looked up as they do."""
    code = (
        "import json; from genmedia.model_loading import stored_model; "
        f"m = stored_model({role!r}); "
        "print(json.dumps({'tag': str(m.tag), 'path': m.path, 'metadata': dict(m.info.metadata)}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=base_env(home), capture_output=True, text=True, check=True
    )
    return StoredModel(**json.loads(result.stdout))


# --- Measuring ----------------------------------------------------------------------------------------------


class PeakMemory:
    """The peak resident memory of a process and its descendants, sampled every 0.1 s in a thread.

    `tree` is the peak of the sum over the tree (what the process costs the machine), `largest` the peak of
    its largest single process (for a server: the worker that holds the model).
    """

    def __init__(self, root_pid: Callable[[], int | None], interval_s: float = 0.1):
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.tree = 0
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_every_interval, name="peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # a measurement shorter than the interval still gets one sample

    def _sample_every_interval(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        pid = self.root_pid()
        if pid is None:
            return
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        sizes = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                sizes.append(process.memory_info().rss)
        if sizes:
            self.tree = max(self.tree, sum(sizes))
            self.largest = max(self.largest, max(sizes))


class BarePipeline:
    """`load_tests/bare.py` in a child process: the pipeline loaded once, then one request at a time."""

    def __init__(
        self,
        home: Path,
        model: StoredModel,
        storage: Path,
        log_path: Path,
        once: bool = False,
        safety_checker: StoredModel | None = None,
    ):
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "load_tests.bare", model.path, model.tag, str(storage)]
                + (["--once"] if once else [])
                + (["--safety-checker", safety_checker.path] if safety_checker else []),
                cwd=REPO_ROOT,
                env=base_env(home),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
        self.log_path = log_path
        self.guidance_scale = float(model.metadata["default_guidance_scale"])
        self.model_s = 0.0
        self.check_s = 0.0

    def read_event(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=30)
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
            raise BenchError(f"the bare pipeline exited ({self.process.returncode}):\n{tail}")
        return json.loads(line)

    def generate(self, seed: int, repeat: int = 1) -> float:
        """Seconds the bare pipeline takes for `repeat` fresh images (seeds `seed`, `seed + 1`, ...).

        `model_s` keeps the part of the last call that the pipeline itself took, `check_s` the safety
        checker's part (0 without one).
        """
        request = dict(
            prompt=PROMPT,
            width=SIDE,
            height=SIDE,
            steps=STEPS,
            guidance_scale=self.guidance_scale,
            seed=seed,
            repeat=repeat,
        )
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.read_event()
        self.model_s = float(answer["model_s"])
        self.check_s = float(answer["check_s"])
        return float(answer["seconds"])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class BareCaptioner:
    """`load_tests/bare_captioner.py` in a child process: stock `generate`, one image after another."""

    def __init__(self, home: Path, model: StoredModel, image_dir: Path, log_path: Path):
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "load_tests.bare_captioner", model.path, str(image_dir), str(CAPTIONER_CPUS)],
                cwd=REPO_ROOT,
                env=base_env(home),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
        self.log_path = log_path

    read_event = BarePipeline.read_event
    close = BarePipeline.close

    def caption(self, names: list[str]) -> tuple[float, list[str]]:
        """Seconds the bare process took to caption these image files one by one, and their captions."""
        self.process.stdin.write(json.dumps({"images": names}) + "\n")
        self.process.stdin.flush()
        answer = self.read_event()
        return float(answer["seconds"]), answer["captions"]


def post_image(client: httpx.Client, url: str, seed: int, wait_unavailable_s: float = 0) -> tuple[float, dict]:
    """One `/generate_image` at the bench size: its end-to-end seconds and its answer.

    `wait_unavailable_s`: how long to keep retrying a 503 (a gateway reports ready without probing its model
    services, so that a probe never wakes a GPU scaled to zero: right after a start they may still load).
    """
    deadline = time.monotonic() + wait_unavailable_s
    while True:
        started = time.perf_counter()
        response = client.post(
            f"{url}/generate_image",
            json={"prompt": PROMPT, "width": SIDE, "height": SIDE, "steps": STEPS, "seed": seed},
        )
        seconds = time.perf_counter() - started
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(2)
    if response.status_code != 200:
        raise BenchError(f"/generate_image answered {response.status_code}: {response.text[:500]}")
    return seconds, response.json()


class ServiceModelTime:
    """The image service's own mean pipeline time over the requests made since this was created.

    A composition's services share one metrics directory, so the gateway's `/metrics` shows the image
    service's `genmedia_generation_seconds` too.
    """

    NAME = "genmedia_generation_seconds"

    def __init__(self, server: Server):
        self.server = server
        self.start = self.read()

    def read(self) -> tuple[float, float]:
        return (
            self.server.metric(f"{self.NAME}_sum", capability="text-to-image"),
            self.server.metric(f"{self.NAME}_count", capability="text-to-image"),
        )

    def mean(self) -> float:
        total, count = self.read()
        return (total - self.start[0]) / (count - self.start[1]) if count > self.start[1] else float("nan")


def caption_of(client: httpx.Client, url: str, image: bytes) -> str:
    """One `/caption_image`: the caption."""
    response = client.post(f"{url}/caption_image", files={"image": ("bench.png", image, "image/png")})
    if response.status_code != 200:
        raise BenchError(f"/caption_image answered {response.status_code}: {response.text[:500]}")
    return response.json()["caption"]


def post_caption(client: httpx.Client, url: str, image: bytes) -> str | None:
    """One `/caption_image`: None when captioned, else what it answered."""
    response = client.post(f"{url}/caption_image", files={"image": ("bench.png", image, "image/png")})
    return None if response.status_code == 200 else f"{response.status_code}: {response.text[:200]}"


def caption_images(count: int) -> list[bytes]:
    """Distinct 640 x 480 photos-to-be (colour gradients), as PNG uploads."""
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((640, 480))
    images = []
    for index in range(count):
        shade = Image.new("L", gradient.size, 40 + 12 * index)
        picture = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_180), shade))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def in_turn(index: int, measure_a: Callable[[], A], measure_b: Callable[[], B]) -> tuple[A, B]:
    """The `index`-th pair of measurements, taken A then B, or B then A for odd indices (A B, B A, A B ...):
    a drift of the machine's speed over the run, or an edge of going first or second, then weighs on both
    sides alike."""
    if index % 2 == 0:
        a = measure_a()
        return a, measure_b()
    b = measure_b()
    return measure_a(), b


def median(values: list[float]) -> float:
    return statistics.median(values)


class BenchServer(Server):
    """`testbed.serving.Server`, polling `/readyz` every 50 ms rather than 500 ms: a cold start is timed to the
    moment the service is ready, not to the next poll after it."""

    ready_poll_s = 0.05


def bench_server(target: str, home: Path, directory: Path, **settings: str) -> Server:
    """`bentoml serve TARGET` on the store in `home`, with its log, storage, spool and BENTOML_HOME (whose
    metrics and task database a server wipes when it starts) in a directory of its own; `settings` are
    more environment variables."""
    directory.mkdir(parents=True)
    env = base_env(
        home,
        LOCAL_STORAGE_DIR=str(directory / "files"),
        SPOOL_DIR=str(directory / "spool"),
        RATE_LIMIT_PER_MINUTE="1000000",
        MODEL_PROFILE="bench",
        # The bare pipeline these servers are compared with runs no checker; its cost is a row of its own.
        SAFETY_CHECKER="off",
        **settings,
    )
    server = BenchServer(target, env, directory / "server.log")
    server.env["PUBLIC_BASE_URL"] = server.url
    return server


# --- The comparisons ----------------------------------------------------------------------------------------


def cold_start_and_memory(home: Path, model: StoredModel, work: Path, plan: Plan, seeds) -> list[Row]:
    """Serve the image service alone until its first image, then a bare process likewise; alternate."""
    cold, memory = Row.named("cold start"), Row.named("memory")
    if (ONCE_REQUEST["width"], ONCE_REQUEST["height"], ONCE_REQUEST["steps"]) != (SIDE, SIDE, STEPS):
        raise BenchError(f"load_tests/bare.py's ONCE_REQUEST is not this bench's {SIDE}², {STEPS}-step request")
    # An untimed bare start first: the kernel here drops idle page cache, and the first start of a run
    # would otherwise alone read the weights and torch's libraries from disk (137 s against 14 s once).
    log("cold start: warming the page cache with one untimed bare start")
    warm_up = BarePipeline(home, model, work / "bare-cold-warm-up", work / "bare-cold-warm-up.log", once=True)
    try:
        warm_up.read_event()
    finally:
        warm_up.close()
    served_s, bare_s, served_rss, bare_rss, served_worker, bare_loaded_s = [], [], [], [], [], []
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:

        def served(index: int) -> None:
            log(f"cold start {index + 1}/{plan.cold_starts}: bentoml serve {IMAGE_SERVICE}")
            server = bench_server(IMAGE_SERVICE, home, work / f"cold-{index}")
            with PeakMemory(lambda: server.process and server.process.pid) as peak:
                started = time.perf_counter()
                try:
                    server.start(ready_timeout_s=READY_TIMEOUT_S)
                    post_image(client, server.url, next(seeds))
                    served_s.append(time.perf_counter() - started)
                finally:
                    server.stop()
            served_rss.append(peak.tree)
            served_worker.append(peak.largest)
            log(f"  served: {served_s[-1]:.1f} s, peak RSS {peak.tree / 1e9:.2f} GB")

        def bare(index: int) -> None:
            log(f"cold start {index + 1}/{plan.cold_starts}: bare process")
            started = time.perf_counter()
            process = BarePipeline(home, model, work / f"bare-cold-{index}", work / f"bare-cold-{index}.log", once=True)
            with PeakMemory(lambda: process.process.pid) as peak:
                try:
                    bare_loaded_s.append(process.read_event()["loaded_s"])
                    bare_s.append(time.perf_counter() - started)
                finally:
                    process.close()
            bare_rss.append(peak.tree)
            log(f"  bare: {bare_s[-1]:.1f} s, peak RSS {peak.tree / 1e9:.2f} GB")

        for index in range(plan.cold_starts):
            in_turn(index, partial(served, index), partial(bare, index))
    cold.measured(served_s, bare_s)
    cold.samples = {"served s": served_s, "bare s": bare_s}
    cold.note = (
        f"served: the image service alone, from `bentoml serve` to its first {SIDE}² image; bare: from the process "
        f"start to its first image, of which imports and loading took {median(bare_loaded_s):.1f} s"
    )
    memory.measured([value / 1e9 for value in served_rss], [value / 1e9 for value in bare_rss])
    memory.samples = {
        "served tree GB": [value / 1e9 for value in served_rss],
        "served worker GB": [value / 1e9 for value in served_worker],
        "bare GB": [value / 1e9 for value in bare_rss],
    }
    memory.note = (
        "peak of each cold-start run, summed over each process tree; the service's largest process alone "
        f"peaked at {max(served_worker) / 1e9:.2f} GB"
    )
    return [cold, memory]


def gateway_rows(home: Path, model: StoredModel, work: Path, plan: Plan, seeds) -> list[Row]:
    """The gateway (all three services) beside a loaded bare pipeline: overhead, throughput and cache hit;
    then, on the same gateway, batched images and job overhead."""
    overhead, throughput, cache = (
        Row.named("serving overhead"),
        Row.named("throughput under load"),
        Row.named("cache hit"),
    )
    log("starting the bare pipeline and `bentoml serve services.gateway:Gateway`")
    bare = BarePipeline(home, model, work / "bare-files", work / "bare.log")
    gateway = bench_server(GATEWAY, home, work / "gateway")
    try:
        gateway.start(ready_timeout_s=READY_TIMEOUT_S)
        loaded = bare.read_event()
        log(f"ready (bare pipeline on {loaded['device']}); warming up both")
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client, ThreadPoolExecutor(IMAGE_CLIENTS) as clients:
            post_image(client, gateway.url, next(seeds), wait_unavailable_s=READY_TIMEOUT_S)
            image_s = bare.generate(next(seeds))
            pairs = max(plan.overhead_pairs, min(100, math.ceil(plan.overhead_seconds / image_s)))
            per_client = max(1, min(50, math.ceil(plan.round_seconds / (IMAGE_CLIENTS * image_s))))

            served, direct, direct_model, repeats = [], [], [], []
            served_model = ServiceModelTime(gateway)
            for index in range(pairs):
                seed = next(seeds)  # the same request on both sides, each into its own storage
                (served_s, _), direct_s = in_turn(
                    index, partial(post_image, client, gateway.url, seed), partial(bare.generate, seed)
                )
                served.append(served_s)
                direct.append(direct_s)
                direct_model.append(bare.model_s)
                # The same request again, answered from storage: the cache hit row's pair of this one.
                repeat_s, answer = post_image(client, gateway.url, seed)
                if not answer["cached"]:
                    raise BenchError(f"a repeated seeded request was generated again: {answer}")
                repeats.append(repeat_s)
                if pairs <= 10 or index + 1 == pairs:
                    log(f"overhead {index + 1}/{pairs}: gateway {served[-1]:.2f} s, bare {direct[-1]:.2f} s")
            overhead.measured(served, direct)
            overhead.samples = {"gateway s": served, "bare s": direct}
            served_mean, service_model_s = statistics.fmean(served), served_model.mean()
            overhead.note = (
                "p50 of fresh seeded requests, gateway end to end vs bare generate + PNG + upload. Of a request's "
                f"mean {served_mean:.2f} s, the image service's pipeline call took {service_model_s:.2f} s "
                f"(its genmedia_generation_seconds), so the serving path (gateway, HTTP hops, cache lookups, "
                f"PNG, upload) took {served_mean - service_model_s:.3f} s; the bare pipeline call "
                f"took {statistics.fmean(direct_model):.2f} s of {statistics.fmean(direct):.2f} s"
            )

            served_rates, direct_rates = [], []
            round_images = IMAGE_CLIENTS * per_client

            def served_round() -> float:
                round_seeds = [next(seeds) for _ in range(round_images)]
                started = time.perf_counter()
                list(clients.map(lambda seed: post_image(client, gateway.url, seed), round_seeds))
                return round_images / (time.perf_counter() - started)

            def direct_round() -> float:
                round_seeds = [next(seeds) for _ in range(round_images)]  # consecutive: bare.py counts up
                return round_images / bare.generate(round_seeds[0], repeat=round_images)

            for index in range(plan.throughput_rounds):
                served_rate, direct_rate = in_turn(index, served_round, direct_round)
                served_rates.append(served_rate)
                direct_rates.append(direct_rate)
                log(
                    f"throughput {index + 1}/{plan.throughput_rounds}: gateway {served_rates[-1]:.3f} img/s, "
                    f"bare {direct_rates[-1]:.3f} img/s"
                )
            throughput.measured(served_rates, direct_rates)
            throughput.samples = {"gateway img/s": served_rates, "bare img/s": direct_rates}
            throughput.note = f"rounds of {round_images} images: {IMAGE_CLIENTS} concurrent clients vs back to back"
            # The gateway's own rows, on the pipeline and the job store already warm.
            batched = BatchedImages(client, gateway.url, plan, seeds).measure()
            job = JobOverhead(client, gateway.url, seeds).measure(pairs)

            cache.measured(repeats, served)
            cache.samples = {"repeat s": repeats}
            cache.note = (
                "each overhead pair's seeded request made again right after it (answered by the gateway from "
                "storage) vs its fresh generation through the gateway"
            )
    finally:
        gateway.stop()
        bare.close()
    return [overhead, throughput, cache, batched, job]


def safety_row(home: Path, safety_home: Path, model: StoredModel, work: Path, plan: Plan, seeds) -> list[Row]:
    """The safety checker's seconds per image against the pipeline's, both in the bare process."""
    row = Row.named("safety checker")
    checker = stored(safety_home, "safety-checker")
    log(f"starting the bare pipeline with the safety checker {checker.tag}")
    bare = BarePipeline(home, model, work / "safety-files", work / "safety.log", safety_checker=checker)
    try:
        device = bare.read_event()["device"]
        bare.generate(next(seeds))  # warm-up of both
        check_s, model_s = [], []
        for index in range(plan.checked_images):
            bare.generate(next(seeds))
            check_s.append(bare.check_s)
            model_s.append(bare.model_s)
            log(f"safety checker {index + 1}/{plan.checked_images}: {check_s[-1]:.3f} s, image {model_s[-1]:.2f} s")
    finally:
        bare.close()
    row.measured(check_s, model_s)
    row.samples = {"checker s": check_s, "image s": model_s}
    if device != "cuda":
        row.target = None
    row.note = (
        f"on {device}: p50 of the checker `{checker.tag}` (CLIP image processor, vision encoder, concept scores) on "
        f"one {SIDE}² image ÷ p50 of the pipeline call that made it; the ≤ 0.05 target is a GPU's"
    )
    return [row]


def batching_row(home: Path, work: Path, plan: Plan) -> list[Row]:
    """The captioner as served, and with batching off, side by side; rounds of concurrent captions."""
    row = Row.named("adaptive batching")
    servers = {
        "batched": bench_server(CAPTIONER, home, work / "captioner"),
        "unbatched": bench_server(CAPTIONER, home, work / "unbatched", CAPTION_MAX_BATCH_SIZE="1"),
    }
    log("starting the captioner twice: as served, and with batching off")
    images = caption_images(CAPTION_CLIENTS)
    try:
        with ThreadPoolExecutor(len(servers)) as starting:
            list(starting.map(lambda server: server.start(ready_timeout_s=READY_TIMEOUT_S), servers.values()))
        rates = {name: [] for name in servers}
        refusals = {name: [] for name in servers}
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client, ThreadPoolExecutor(CAPTION_CLIENTS) as clients:

            def caption_round(name: str, uploads: list[bytes]) -> float:
                """Captions answered per second in a burst of concurrent uploads; refusals are kept."""
                started = time.perf_counter()
                answers = list(clients.map(lambda image: post_caption(client, servers[name].url, image), uploads))
                seconds = time.perf_counter() - started
                refusals[name] += [answer for answer in answers if answer is not None]
                return answers.count(None) / seconds

            for name in servers:
                caption_round(name, images[:2])  # warm-up
            if any(refusals.values()):
                raise BenchError(f"the captioners refused warm-up captions: {refusals}")
            for index in range(plan.caption_rounds):
                batched, unbatched = in_turn(
                    index, lambda: caption_round("batched", images), lambda: caption_round("unbatched", images)
                )
                rates["batched"].append(batched)
                rates["unbatched"].append(unbatched)
                log(
                    f"captions {index + 1}/{plan.caption_rounds}: "
                    + ", ".join(f"{n} {r[-1]:.2f}/s" for n, r in rates.items())
                )
        mean_batch = {}
        for name, server in servers.items():
            count = server.metric("genmedia_caption_batch_size_count")
            mean_batch[name] = server.metric("genmedia_caption_batch_size_sum") / count if count else float("nan")
    finally:
        for server in servers.values():
            server.stop()
    if not all(rates["batched"]) or not all(rates["unbatched"]):
        raise BenchError(f"no captions in a whole round: {refusals}")
    row.measured(rates["batched"], rates["unbatched"])
    row.samples = {"batched captions/s": rates["batched"], "unbatched captions/s": rates["unbatched"]}
    row.note = (
        f"captioner alone (the second with CAPTION_MAX_BATCH_SIZE=1), rounds of {CAPTION_CLIENTS} concurrent "
        "uploads; mean images per forward pass: "
        f"{mean_batch['batched']:.2f} batched, {mean_batch['unbatched']:.2f} unbatched"
    )
    for name, answers in refusals.items():
        if answers:
            row.note += f"; {len(answers)} {name} upload(s) not captioned (counted as no caption), e.g. {answers[0]}"
    return [row]


class BatchedImages:
    """The "batched images" row, through the gateway's `/v1/images/generations`: `n=4` (one batched call to
    the image service) vs four `n=1` calls back to back, alternating, each with fresh seeds. A batch
    amortises the per-call work a GPU otherwise repeats (prompt encoding, kernel launches at a batch of one);
    a CPU is already busy at one image, so there the ratio is reported, not held to the GPU's target."""

    COUNT = 4
    GPU_TARGET = (">=", 1.5)

    def __init__(self, client: httpx.Client, url: str, plan: Plan, seeds):
        self.client = client
        self.url = url
        self.rounds = max(2, plan.throughput_rounds)
        self.seeds = seeds

    def generate(self, count: int) -> None:
        """`count` images of seeds s … s+count-1, all fresh, in one call."""
        seed = next(self.seeds)
        for _ in range(count - 1):
            next(self.seeds)
        body = {"prompt": PROMPT, "size": f"{SIDE}x{SIDE}", "steps": STEPS, "seed": seed, "n": count}
        response = self.client.post(f"{self.url}/v1/images/generations", json=body)
        if response.status_code != 200 or len(response.json()["data"]) != count:
            raise BenchError(f"/v1/images/generations answered {response.status_code}: {response.text[:500]}")

    def batched(self) -> float:
        started = time.perf_counter()
        self.generate(self.COUNT)
        return self.COUNT / (time.perf_counter() - started)

    def singles(self) -> float:
        started = time.perf_counter()
        for _ in range(self.COUNT):
            self.generate(1)
        return self.COUNT / (time.perf_counter() - started)

    def measure(self) -> Row:
        import torch

        row = Row.named("batched images")
        self.batched()  # warm-up of the batched shapes (single images have run in the rows before)
        batched, singles = [], []
        for index in range(self.rounds):
            a, b = in_turn(index, self.batched, self.singles)
            batched.append(a)
            singles.append(b)
            log(f"batched images {index + 1}/{self.rounds}: n={self.COUNT} {a:.3f} img/s, singles {b:.3f}")
        row.measured(batched, singles)
        row.samples = {f"n={self.COUNT} img/s": batched, "single img/s": singles}
        on_gpu = torch.cuda.is_available()
        row.target = self.GPU_TARGET if on_gpu else None
        row.note = (
            f"through the gateway, rounds of {self.COUNT} images: one `n={self.COUNT}` call vs {self.COUNT} calls "
            f"back to back; {'GPU: target ≥ 1.5' if on_gpu else 'CPU: reported (a GPU is expected to exceed 1.5)'}"
        )
        return row


def caption_rows(homes: dict[str, Path], work: Path, plan: Plan) -> list[Row]:
    """Caption speed for each captioner size; caption memory from the last (BLIP-large, `full`'s default)."""
    uploads = caption_images(plan.caption_speed_images * plan.caption_speed_pairs)
    image_dir = work / "caption-images"
    image_dir.mkdir()
    for index, upload in enumerate(uploads):
        (image_dir / f"{index}.png").write_bytes(upload)
    rows = [caption_speed(size, home, image_dir, uploads, work, plan) for size, home in homes.items()]
    return [speed for speed, _ in rows] + [rows[-1][1]]


def caption_speed(
    size: str, home: Path, image_dir: Path, uploads: list[bytes], work: Path, plan: Plan
) -> tuple[Row, Row]:
    """The service (one client, one upload after another) beside the bare process on the same images, pair
    by pair; and the peak RSS of each side during each of its rounds."""
    speed, memory = Row.named(f"caption speed, {size}"), Row.named("caption memory")
    model = stored(home, "image-captioning")
    log(f"caption speed, {size}: starting the captioner and the bare process ({model.tag})")
    server = bench_server(CAPTIONER, home, work / f"captioner-{size}")
    bare = BareCaptioner(home, model, image_dir, work / f"bare-captioner-{size}.log")
    served_rates, bare_rates, served_rss, bare_rss = [], [], [], []
    differing: list[tuple[str, str]] = []

    def served_round(client: httpx.Client, batch: list[int]) -> tuple[float, list[str]]:
        with PeakMemory(lambda: server.process.pid) as peak:
            started = time.perf_counter()
            captions = [caption_of(client, server.url, uploads[i]) for i in batch]
            seconds = time.perf_counter() - started
        served_rss.append(peak.tree)
        return len(batch) / seconds, captions

    def bare_round(batch: list[int]) -> tuple[float, list[str]]:
        with PeakMemory(lambda: bare.process.pid) as peak:
            seconds, captions = bare.caption([f"{i}.png" for i in batch])
        bare_rss.append(peak.tree)
        return len(batch) / seconds, captions

    try:
        server.start(ready_timeout_s=READY_TIMEOUT_S)
        bare.read_event()
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            # Warm-up: the first caption of a process pays one-off costs on either side.
            caption_of(client, server.url, uploads[0])
            bare.caption(["0.png"])
            for index in range(plan.caption_speed_pairs):
                batch = list(range(index * plan.caption_speed_images, (index + 1) * plan.caption_speed_images))
                (served_rate, served_captions), (bare_rate, bare_captions) = in_turn(
                    index, partial(served_round, client, batch), partial(bare_round, batch)
                )
                served_rates.append(served_rate)
                bare_rates.append(bare_rate)
                differing += [pair for pair in zip(served_captions, bare_captions, strict=True) if pair[0] != pair[1]]
                log(
                    f"caption speed, {size} {index + 1}/{plan.caption_speed_pairs}: service "
                    f"{served_rate:.3f}/s, bare {bare_rate:.3f}/s"
                )
    finally:
        server.stop()
        bare.close()
    speed.measured(served_rates, bare_rates)
    speed.samples = {"service captions/s": served_rates, "bare captions/s": bare_rates}
    identical = "all identical" if not differing else f"{len(differing)} differ, e.g. {differing[0]}"
    speed.note = (
        f"{size}-sized captioner, rounds of {plan.caption_speed_images} distinct 640×480 uploads: the service "
        "with one client (upload after upload, end to end) vs stock `generate` on the same files in a bare "
        f"process, {CAPTIONER_CPUS} torch threads each; captions {identical}"
    )
    memory.measured(memory_samples(served_rss), memory_samples(bare_rss))
    memory.samples = {"service tree GB": memory_samples(served_rss), "bare GB": memory_samples(bare_rss)}
    memory.note = (
        f"{size}-sized captioner: peak RSS during each caption speed round, the service's process tree vs "
        "the bare process"
    )
    return speed, memory


def memory_samples(values: list[int]) -> list[float]:
    return [value / 1e9 for value in values]


# --- Report -------------------------------------------------------------------------------------------------


class JobOverhead:
    """`job overhead`, on the gateway of the other gateway rows: a durable job's submit → `succeeded` (seen on
    its event stream) against the sync route, fresh seeded requests of the bench size taken in turn, p50 of
    each; and the p50 latency of the stream's first event (the job as it is), counted from the submit's
    answer. Both sides go through one client."""

    # The target: A ÷ B ≤ 1.05, plus at most this much in absolute terms.
    ALLOWED_EXTRA_S = 0.05

    def __init__(self, client: httpx.Client, url: str, seeds):
        self.client = client
        self.url = url
        self.seeds = seeds

    def job(self, seed: int) -> tuple[float, float]:
        """Seconds from submit to the `succeeded` event, and from the submit's answer to the first event."""
        body = {"prompt": PROMPT, "width": SIDE, "height": SIDE, "steps": STEPS, "seed": seed}
        started = time.perf_counter()
        submitted = jobs.submit(self.url, "generate_image", body, {}, client=self.client)
        answered = time.perf_counter()
        if submitted.status_code != 202:
            raise BenchError(f"/jobs/generate_image answered {submitted.status_code}: {submitted.text[:500]}")
        stream = jobs.events(self.url, submitted.json()["id"], {}, timeout_s=REQUEST_TIMEOUT_S, client=self.client)
        _, job = next(stream)
        first_event_s = time.perf_counter() - answered
        for _, later in stream:
            job = later
        if job["status"] != "succeeded":
            raise BenchError(f"a job ended {job['status']}: {job['error']}")
        return time.perf_counter() - started, first_event_s

    def measure(self, pairs: int) -> Row:
        row = Row.named("job overhead")
        self.job(next(self.seeds))  # warm-up of the job path (the sync route has run in the rows before)
        as_jobs, synced, first_events = [], [], []
        for index in range(pairs):
            (job_s, first_s), (sync_s, _) = in_turn(
                index,
                partial(self.job, next(self.seeds)),
                partial(post_image, self.client, self.url, next(self.seeds)),
            )
            as_jobs.append(job_s)
            synced.append(sync_s)
            first_events.append(first_s)
            log(f"job overhead {index + 1}/{pairs}: job {job_s:.2f} s, sync {sync_s:.2f} s")
        row.measured(as_jobs, synced)
        row.samples = {"job s": as_jobs, "sync s": synced, "first event s": first_events}
        within = row.a <= row.b * row.target[1] + self.ALLOWED_EXTRA_S
        row.note = (
            f"p50 of fresh seeded images, submit → `succeeded` on the event stream vs `/generate_image`; first "
            f"event p50 {median(first_events) * 1000:.0f} ms after the submit's answer; within "
            f"{row.target[1]} × sync + {self.ALLOWED_EXTRA_S * 1000:.0f} ms: {'yes' if within else 'no'}"
        )
        return row


def machine_description() -> str:
    import torch

    memory_gib = psutil.virtual_memory().total / 2**30
    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name(0)} (CUDA, float16)"
    else:
        cpu = platform.processor() or "CPU"
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists():
            names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
            cpu = names[0] if names else cpu
        device = f"no GPU: {cpu} (CPU, float32, {torch.get_num_threads()} torch threads)"
    return f"{os.cpu_count()} CPU cores, {memory_gib:.1f} GiB memory, {device}"


def table(rows: list[Row]) -> str:
    lines = ["| row | A (median) | B (median) | ratio (median of pairs) | min–max | target |", "|---" * 6 + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def details(rows: list[Row]) -> str:
    lines = []
    for row in rows:
        if row.error is not None:
            lines.append(f"- **{row.name}**: not measured: {row.error}")
            continue
        samples = "; ".join(f"{name}: {', '.join(f'{v:.3g}' for v in values)}" for name, values in row.samples.items())
        lines.append(f"- **{row.name}**: {row.note}. Samples: {samples}.")
    return "\n".join(lines)


def write_results(rows: list[Row], header: str, elapsed_s: float) -> None:
    analysis = f"{ANALYSIS_HEADING}\n\n(Not investigated yet.)\n"
    if RESULTS.exists():
        previous = RESULTS.read_text()
        if ANALYSIS_HEADING in previous:
            analysis = previous[previous.index(ANALYSIS_HEADING) :]
    RESULTS.write_text(
        "# Benchmarks: serving vs the bare model\n\n"
        "Written by `make bench` (`load_tests/bench.py`, which says how each row is measured); the section on\n"
        "missed targets at the end is written by hand and kept when the benchmark runs again.\n\n"
        f"{header}\n\n{table(rows)}\n\n## Samples\n\n{details(rows)}\n\n"
        f"The run took {elapsed_s / 60:.1f} min.\n\n{analysis}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models, one sample each, no RESULTS.md")
    parser.add_argument(
        "--only",
        action="append",
        choices=SESSIONS,
        help="measure only these rows (repeatable: cold-start = cold start and memory, gateway = overhead, "
        "throughput, cache hit, batched images and job overhead, batching, captions = caption speed and "
        "memory, safety = the safety checker); RESULTS.md is written only when all are measured",
    )
    arguments = parser.parse_args(argv)
    chosen = arguments.only or list(SESSIONS)
    plan = SMOKE_PLAN if arguments.smoke else FULL_PLAN
    started = time.perf_counter()
    load_before = os.getloadavg()[0]

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    images_home, captions_homes, safety_home = prepare_stores(arguments.smoke)
    model = stored_text_to_image(images_home)
    seeds = itertools.count(int(time.time()) % 1_000_000)  # fresh keys in every run

    rows: dict[str, Row] = {}
    measures = {
        "cold-start": lambda: cold_start_and_memory(images_home, model, WORK, plan, seeds),
        "gateway": lambda: gateway_rows(images_home, model, WORK, plan, seeds),
        "batching": lambda: batching_row(captions_homes["BLIP-base"], WORK, plan),
        "captions": lambda: caption_rows(captions_homes, WORK, plan),
        "safety": lambda: safety_row(images_home, safety_home, model, WORK, plan, seeds),
    }
    for session, names in SESSIONS.items():
        if session not in chosen:
            for name in names:
                rows[name] = Row.named(name)
                rows[name].error = "not run (--only)"
            continue
        measure = measures[session]
        try:
            rows.update((row.name, row) for row in measure())
        except (BenchError, RuntimeError, httpx.HTTPError, subprocess.SubprocessError, OSError) as error:
            log(f"{', '.join(names)}: failed: {error}")
            for name in names:
                rows[name] = Row.named(name)
                rows[name].error = str(error).splitlines()[0]
    ordered = [rows[name] for name in ROWS]
    measured = {name for session in chosen for name in SESSIONS[session]}

    elapsed = time.perf_counter() - started
    header = (
        f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n"
        f"- machine: {machine_description()}; load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other work shares this machine)\n"
        f"- models: `{model.tag}` ({'tiny' if arguments.smoke else 'bench: SD-1.5-sized'}) at {SIDE}×{SIDE}, "
        f"{STEPS} step; captions: the {'tiny' if arguments.smoke else 'bench (BLIP-base- and BLIP-large-sized)'} "
        "captioners, on the CPU"
    )
    print(f"\n{header}\n\n{table(ordered)}\n\n{details(ordered)}\n\nbench took {elapsed / 60:.1f} min", flush=True)
    if not arguments.smoke and arguments.only is None:
        write_results(ordered, header, elapsed)
        print(f"written to {RESULTS.relative_to(REPO_ROOT)}", flush=True)
    return 1 if any(row.error for row in ordered if row.name in measured) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The composition under test: `bentoml serve services.gateway:Gateway` on tiny models, storing into the
Supabase Storage stand-in (`testbed.storage_server`), with short timeouts so every fault resolves in seconds.

Shared by the reliability suite (one composition per session) and `load_tests/soak.py`. It also starts the
gateway's `/files` app alone over local storage (`local_files_app`), since the composition's storage is
Supabase, where `/files` answers 404 for everything.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from genmedia.model_loading import IMAGE_CAPTIONING, TEXT_TO_IMAGE, TEXT_TO_SPEECH
from genmedia.outputs import DRAIN_INTERVAL_S
from genmedia.outputs.spool import Spool
from testbed.serving import REPO_ROOT, Server, base_env, free_port
from testbed.storage_server import PREFIX, FakeSupabaseStorage

# Distinctive secrets, so a leak is found by a plain substring search of logs, bodies and specs.
API_KEY = "rel-api-key-Q7m2xV9pL4cT"
SUPABASE_KEY = "rel-service-role-Zt8Kq3Wn6Rb"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BUCKET = "reliability"

# Short, so that an outage answers 503 in seconds: one storage request, and all retries of one operation.
STORAGE_TIMEOUT_S = 0.5
STORAGE_RETRY_BUDGET_S = 1.0
# How long the gateway waits for a model service before 503.
BACKEND_TIMEOUT_S = 8.0
# How long a request body may take to arrive (408 after): short, so that stalled senders are dropped in seconds.
BODY_TIMEOUT_S = 10.0
# The image service's `traffic.max_concurrency` (32 in its decorator), lowered through BentoML's config
# overrides so a burst of a few dozen requests overflows it while each accepted one still ends in seconds.
IMAGE_MAX_CONCURRENCY = 4
# Proposed setting (see README "Failure behaviour"); until `genmedia.settings` reads it, the spool drain
# runs every `DRAIN_INTERVAL_S` (30 s) and the tests that wait for it wait that long.
SPOOL_DRAIN_INTERVAL_S = 2
DRAIN_WAIT_S = max(DRAIN_INTERVAL_S, SPOOL_DRAIN_INTERVAL_S) + 15

SERVICES = ("Gateway", "TextToImage", "TextToSpeech", "ImageCaptioning")


class FaultyStorage(FakeSupabaseStorage):
    """The Storage stand-in, plus faults aimed at uploads alone.

    `fail_next` hits whatever request comes next, and for a new output that is the gateway's cache lookup,
    whose failure only means "not cached": it is never the part that must be retried. Uploads are.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.upload_attempts: collections.Counter[str] = collections.Counter()  # per key, failed ones too
        self._upload_faults: collections.deque[tuple[str, float]] = collections.deque()

    def start(self) -> FaultyStorage:
        super().start()
        # A client killed mid-request (a model service, on purpose) is not worth a traceback on stderr.
        self._http.handle_error = lambda request, client_address: None
        return self

    def fail_next_uploads(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._upload_faults.extend([("fail", status)] * n)

    def hang_next_uploads(self, n: int, seconds: float) -> None:
        with self._lock:
            self._upload_faults.extend([("hang", seconds)] * n)

    def clear_faults(self) -> None:
        """Forget faults queued but not yet met."""
        with self._lock:
            self._failures.clear()
            self._hangs.clear()
            self._upload_faults.clear()

    def handle(self, method, target, headers, body):
        path = target.split("?", 1)[0]
        upload_prefix = f"{PREFIX}/object/{BUCKET}/"
        if method in ("POST", "PUT") and path.startswith(upload_prefix):
            with self._lock:
                self.upload_attempts[path.removeprefix(upload_prefix)] += 1
                fault = self._upload_faults.popleft() if self._upload_faults and not self._down else None
            if fault and fault[0] == "fail":
                with self._lock:
                    self.requests_seen += 1
                error = {"statusCode": str(fault[1]), "code": "InternalError", "error": "internal", "message": "boom"}
                return fault[1], "application/json", json.dumps(error).encode()
            if fault:
                self._stopping.wait(fault[1])
        return super().handle(method, target, headers, body)


def composition_env(bentoml_home: Path, work: Path, storage: FakeSupabaseStorage, **extra: str) -> dict[str, str]:
    overrides = {"services": {"TextToImage": {"traffic": {"max_concurrency": IMAGE_MAX_CONCURRENCY}}}}
    settings = {
        **storage.env(bucket=BUCKET),
        "SPOOL_DIR": str(work / "spool"),
        "STORAGE_TIMEOUT_S": str(STORAGE_TIMEOUT_S),
        "STORAGE_RETRY_BUDGET_S": str(STORAGE_RETRY_BUDGET_S),
        "SPOOL_DRAIN_INTERVAL_S": str(SPOOL_DRAIN_INTERVAL_S),
        "GATEWAY_API_KEYS": API_KEY,
        "RATE_LIMIT_PER_MINUTE": "1000000",
        # Every test calls from loopback: a lockout after a few wrong keys would refuse the suite's right key
        # (tests/test_shared_limits.py checks that limit).
        "AUTH_FAILURES_PER_MINUTE": "1000000",
        "BACKEND_TIMEOUT_S": str(BACKEND_TIMEOUT_S),
        "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "BENTOML_CONFIG_OVERRIDES": json.dumps(overrides),
        # Each composition's own job store unless told to share one (JOB_STORE_URL in `extra`).
        "JOB_STORE_URL": f"sqlite:///{work / 'jobs.db'}",
    }
    return base_env(bentoml_home, **{**settings, **extra})


def new_seed() -> int:
    return secrets.randbelow(2**32)


class Composition:
    """The gateway and its three model services, with what a test needs to fault them and check the outcome."""

    def __init__(self, bentoml_home: Path, work: Path, storage: FakeSupabaseStorage, **extra_env: str):
        self.work = work
        self.storage = storage
        self.spool_dir = work / "spool"
        env = composition_env(bentoml_home, work, storage, **extra_env)
        self.server = Server("services.gateway:Gateway", env, work / "server.log")
        self.image_model: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    def start(self, timeout_s: float = 420) -> Composition:
        started = time.monotonic()
        self.server.start(ready_timeout_s=timeout_s)
        # The gateway is ready before the model services have loaded (its readiness does not probe them).
        self.wait_until_serving(timeout_s=timeout_s - (time.monotonic() - started))
        return self

    def stop(self) -> None:
        """Stop the server; workers left behind (circus starts them in sessions of their own) are killed."""
        if self.server.process is None:
            return
        try:
            left = psutil.Process(self.server.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            left = []
        self.server.stop()
        for process in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    def kill(self) -> None:
        """Kill the server and every worker at once (SIGKILL), with no clean shutdown: a crash, a lost node."""
        root = psutil.Process(self.server.process.pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.server.process.wait(timeout=30)

    # Requests.

    def post(self, route: str, *, headers: dict | None = None, timeout: float = 120, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}{route}", headers={**AUTH, **(headers or {})}, timeout=timeout, **kwargs)

    def image(self, seed: int | None = None, size: int = 64, **fields) -> httpx.Response:
        body = {"prompt": "a lighthouse", "width": size, "height": size, "seed": new_seed() if seed is None else seed}
        return self.post("/generate_image", json={**body, **fields})

    def speech(self, seed: int | None = None, **fields) -> httpx.Response:
        body = {"text": "Reliability check.", "seed": new_seed() if seed is None else seed}
        return self.post("/synthesize_speech", json={**body, **fields})

    def caption(self) -> httpx.Response:
        return self.post("/caption_image", files={"image": ("red.png", tiny_png(), "image/png")})

    def wait_until_serving(self, capabilities=("images", "audio", "captions"), timeout_s: float = 300) -> float:
        """Wait until each capability answers 200 (a model service that is loading or restarting answers
        503 after BACKEND_TIMEOUT_S); returns the seconds it took."""
        # New seeds, so that the image and speech services really generate (a repeat is answered from storage).
        calls = {"images": self.image, "audio": self.speech, "captions": self.caption}
        started = time.monotonic()
        pending = list(capabilities)
        while pending:
            response = calls[pending[0]]()
            if response.status_code == 200:
                if pending.pop(0) == "images":
                    self.image_model = response.json()["model"]
                continue
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(
                    f"{pending[0]} not served after {timeout_s:.0f} s: {response.status_code} {response.text}\n"
                    f"{self.server.log_tail()}"
                )
            time.sleep(1)
        return time.monotonic() - started

    # Processes.

    def processes(self, service: str) -> list[psutil.Process]:
        """The live worker processes of `service` (one of SERVICES)."""
        found = []
        for process in psutil.Process(self.server.process.pid).children(recursive=True):
            try:
                command = process.cmdline()
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.NoSuchProcess:
                continue
            if "--service-name" in command and command[command.index("--service-name") + 1] == service:
                found.append(process)
        return found

    def process(self, service: str) -> psutil.Process:
        [process] = self.processes(service)
        return process

    def rss_mb(self, service: str | None = None) -> float:
        """Resident memory of one service's workers, or of the whole composition, in MB."""
        processes = (
            self.processes(service)
            if service
            else [psutil.Process(self.server.process.pid)]
            + [process for name in SERVICES for process in self.processes(name)]
        )
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total / 2**20

    # Outcomes.

    def metric(self, name: str, **labels: str) -> float:
        return self.server.metric(name, **labels)

    # Outputs are named here by their key's prefix (`images/…`, `audio/…`); metrics and spools by model role.
    ROLES = {"images": TEXT_TO_IMAGE, "audio": TEXT_TO_SPEECH, "captions": IMAGE_CAPTIONING}

    def generated(self, kind: str) -> float:
        return self.metric("genmedia_outputs_generated_total", capability=self.ROLES[kind])

    def spooled(self, kind: str) -> list[str]:
        return Spool(self.spool_dir / self.ROLES[kind]).keys()

    def stored(self, key: str) -> bool:
        return (BUCKET, key) in self.storage.objects

    def stored_content_type(self, key: str) -> str:
        return self.storage.objects[BUCKET, key].content_type

    def wait_until_stored(self, keys, timeout_s: float) -> float:
        """Wait until every key is in storage, without sending a request; returns the seconds it took."""
        started = time.monotonic()
        while not all(self.stored(key) for key in keys):
            if time.monotonic() - started > timeout_s:
                missing = [key for key in keys if not self.stored(key)]
                raise AssertionError(f"not in storage after {timeout_s:.0f} s: {missing}\n{self.server.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - started


def tiny_png(size=(48, 32), color=(200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


class Suspended:
    """`with Suspended(process):` the process is stopped (SIGSTOP): it hangs, holding its socket, like a stuck GPU."""

    def __init__(self, process: psutil.Process):
        self.process = process

    def __enter__(self) -> psutil.Process:
        self.process.send_signal(signal.SIGSTOP)
        return self.process

    def __exit__(self, *exc_info) -> None:
        self.process.send_signal(signal.SIGCONT)


class MemoryWatch:
    """Samples the composition's resident memory in a thread; `peak` per service and in total, in MB."""

    def __init__(self, composition: Composition, interval_s: float = 0.5):
        self.composition = composition
        self.interval_s = interval_s
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def start(self) -> MemoryWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> None:
        for name in (*SERVICES, None):
            try:
                rss = self.composition.rss_mb(name)
            except (psutil.Error, ValueError):
                continue
            label = name or "total"
            self.peak[label] = max(self.peak.get(label, 0.0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


class LocalFilesServer:
    """`local_files_app` under uvicorn on loopback: the gateway's `/files` route over local storage."""

    def __init__(self, work: Path, **settings: str):
        self.root = work / "files"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "files-server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "GATEWAY_", "STORAGE_"))},
            "HF_HUB_OFFLINE": "1",
            "BENTOML_DO_NOT_TRACK": "True",
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_DIR": str(self.root),
            "PUBLIC_BASE_URL": self.url,
            # What `services.gateway` sets for BentoML's uvicorn, which reads it after importing the service;
            # this uvicorn reads it before, so it is set here: X-Forwarded-For is the gateway's to judge.
            "FORWARDED_ALLOW_IPS": "",
            **settings,
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> LocalFilesServer:
        command = [sys.executable, "-m", "uvicorn", "--factory", "testbed.composition:local_files_app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"files server exited:\n{self.log_path.read_text()}")
            try:
                httpx.get(f"{self.url}/files/probe", timeout=2)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"files server not up after {timeout_s} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def local_files_app():
    """The gateway's `/files` app mounted as `bentoml serve` mounts it, behind the gateway's own middleware,
    with one stub API route (`POST /generate_image`) so the access checks have something to guard."""
    from _bentoml_impl.server.mount import PassiveMount
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from genmedia.contract.errors import ErrorBodyMiddleware
    from services.gateway import files_app
    from services.gateway.access import AccessGuard, AddressCheck, Cors

    async def accepted(request):
        return JSONResponse({"accepted": True})

    app = Starlette(routes=[Route("/generate_image", accepted, methods=["POST"]), PassiveMount("/files", files_app)])
    return AddressCheck(Cors(AccessGuard(ErrorBodyMiddleware(app))))

"""Run a real `bentoml serve` (or `python -m models`) for tests: loopback, a free port, always stopped.

The server runs in its own process group so that stopping it also stops the dependency and worker
processes BentoML starts; its output goes to a log file that a failing test can show.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
BENTOML = str(Path(sys.executable).with_name("bentoml"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(bentoml_home: Path, **extra: str) -> dict[str, str]:
    """The environment of every process the tests start: offline, untracked, this store."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("SUPABASE_", "GATEWAY_", "STORAGE_", "BLOCKED_", "RATE_LIMIT", "CORS_", "JOB_", "WEBHOOK_")
        )
    }
    env.update(
        HF_HUB_OFFLINE="1",
        BENTOML_DO_NOT_TRACK="True",
        BENTOML_HOME=str(bentoml_home),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_python(bentoml_home: Path, *arguments: str, **extra_env: str) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in the repository, in the tests' environment on this store; output captured."""
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        env=base_env(bentoml_home, **extra_env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def private_home(shared_home: Path, work_dir: Path) -> Path:
    """A BENTOML_HOME of one server's own that sees the shared store's models and bentos.

    A starting server wipes its home's Prometheus directory and async-task database, so two servers on
    one home would erase each other's metrics and jobs.
    """
    home = work_dir / "bentoml-home"
    home.mkdir(exist_ok=True)
    for store in ("models", "bentos"):
        (shared_home / store).mkdir(exist_ok=True)
        if not (home / store).exists():
            (home / store).symlink_to(shared_home / store, target_is_directory=True)
    return home


class Server:
    """`bentoml serve TARGET` on 127.0.0.1:<free port>, ready once `/readyz` answers 200."""

    # How often `/readyz` is asked, through one client: `httpx.get` builds a client, TLS context included,
    # per call (20-40 ms of CPU on 2 cores), CPU that the starting server would lose.
    ready_poll_s = 0.5

    def __init__(self, target: str, env: dict[str, str], log_path: Path, port: int | None = None):
        self.target = target
        self.env = {**env, "BENTOML_HOME": str(private_home(Path(env["BENTOML_HOME"]), log_path.parent))}
        # A job store of its own unless told to share one: gateways on one store run each other's jobs.
        self.env.setdefault("JOB_STORE_URL", f"sqlite:///{log_path.parent / 'jobs.db'}")
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, ready_timeout_s: float = 240) -> Server:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [BENTOML, "serve", self.target, "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(ready_timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2) as poller:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.target} exited ({self.process.returncode}):\n{self.log_tail()}")
                try:
                    if poller.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(self.ready_poll_s)
        self.stop()
        raise RuntimeError(f"{self.target} not ready after {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a Prometheus sample `name` whose labels include `labels` (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            sample, _, value = line.rpartition(" ")
            sample_name, _, label_text = sample.partition("{")
            if sample_name != name:
                continue
            if all(f'{key}="{val}"' in label_text for key, val in labels.items()):
                total += float(value)
        return total


def import_tiny_models(bentoml_home: Path) -> str:
    """Build the tiny profile into `bentoml_home`'s model store; returns the importer's output."""
    result = subprocess.run(
        [sys.executable, "-m", "models", "import", "--profile", "tiny"],
        cwd=REPO_ROOT,
        env=base_env(bentoml_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"tiny model import failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout

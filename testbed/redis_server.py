"""A real `redis-server` for tests and benchmarks: loopback, a free port, a temp dir, no persistence.

It can be killed and started again on the same port (`kill`, `start`), as a Redis that fails and comes back
does: empty, since nothing is persisted.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import redis

from testbed.servers import find_program
from testbed.serving import free_port


def redis_server_program() -> Path | None:
    return find_program("redis-server")


class RedisServer:
    """`redis-server` on 127.0.0.1:<free port>; `url` is what RATE_LIMIT_STORAGE_URL takes."""

    def __init__(self, program: Path, work_dir: Path | None = None, port: int | None = None):
        self.program = program
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="genmedia-redis-"))
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20) -> RedisServer:
        command = [str(self.program), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.work_dir)]
        # No snapshot, no append-only file: a restart is an empty Redis, like a managed one that lost its data.
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"]
        with open(self.work_dir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.process.returncode}):\n{self.log_text()}")
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server not answering after {timeout_s} s:\n{self.log_text()}")

    def kill(self) -> None:
        """Stop it at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> redis.Redis:
        """A client that gives up at once when Redis is down."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def answers(self) -> bool:
        try:
            with self.client() as client:
                return client.ping()
        except redis.RedisError:
            return False

    def log_text(self) -> str:
        path = self.work_dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

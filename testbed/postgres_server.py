"""A real PostgreSQL server for tests: Debian's `initdb` into a temporary directory, on a free loopback port.

Started once per test session (`tests/conftest.py`'s `postgres` fixture); each user of it takes a database of
its own (`new_database`). PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
user (Debian's package makes it) through `runuser`. The socket directory is the temporary one too, so
nothing is written under /var/run. fsync is off: a test database need not survive a power cut.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from testbed.servers import find_program
from testbed.serving import free_port

POSTGRES_BIN_DIRS = ("/usr/lib/postgresql/*/bin",)
SUPERUSER = "genmedia"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's programs are missing or the server would not start; the message says which."""


class PostgresServer:
    def __init__(self) -> None:
        self.initdb = find_program("initdb", *POSTGRES_BIN_DIRS)
        self.postgres = find_program("postgres", *POSTGRES_BIN_DIRS)
        if self.initdb is None or self.postgres is None:
            raise PostgresUnavailable("initdb/postgres are not installed (Debian: apt-get install postgresql)")
        self.run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run PostgreSQL") from None
            self.run_as = "postgres"
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="genmedia-postgres-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.process: subprocess.Popen | None = None

    def _command(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else list(argv)

    def start(self, timeout_s: float = 60) -> PostgresServer:
        if self.run_as:
            shutil.chown(self.root, self.run_as)
        initdb_argv = [str(self.initdb), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
        initdb_argv += ["--locale=C", "--no-sync"]
        initdb = subprocess.run(
            self._command(*initdb_argv),
            capture_output=True,
            text=True,
        )
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {initdb.stderr.strip()[-500:]}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "fsync": "off",
            "max_connections": "200",
        }
        argv = [str(self.postgres), "-D", str(self.data)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server writes to it for as long as it runs
        self.process = subprocess.Popen(self._command(*argv), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresUnavailable(f"postgres exited at start: {self.log_tail()}")
            if self._accepts_connections():
                return self
            time.sleep(0.2)
        self.stop()
        raise PostgresUnavailable(f"postgres not accepting connections after {timeout_s} s: {self.log_tail()}")

    def _accepts_connections(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new, empty database on this server; returns its URL (JOB_STORE_URL's form)."""
        import psycopg

        name = f"test_{secrets.token_hex(4)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown: clients are disconnected, the server stops cleanly. runuser
            # passes it on to postgres.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)

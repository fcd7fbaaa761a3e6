"""A webhook receiver on loopback that verifies every signature with the `standardwebhooks` package.

It answers each request (over HTTP, or HTTPS with a certificate of its own) from a script (`answers`: HTTP
statuses in order, the last repeating; or the special answers below) and records what came: the path, the
headers, the body and whether the signature was valid.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from testbed.serving import free_port

REDIRECT = "redirect"  # 307 to /elsewhere
ENDLESS = "endless"  # 200, then a body that never ends
SILENT = "silent"  # no answer at all, until the receiver stops


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def self_signed_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for the DNS name `name`, and its key, made with Debian's `openssl`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl is not installed (Debian: apt-get install openssl)")
    certificate, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return certificate, key


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any  # the event the signature vouches for, or None when verification failed
    error: str | None


class WebhookReceiver:
    """`with WebhookReceiver(secret, [500, 500, 200]) as receiver:` then `receiver.url`, `receiver.received`."""

    def __init__(self, secret: str, answers: list[int | str] | None = None, tls: tuple[Path, Path] | None = None):
        """`tls`: (certificate, key) to answer over HTTPS; `url` then names `localhost`."""
        self.verifier = Webhook(secret)
        self.answers = list(answers or [200])
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.port = free_port()
        self.url = f"https://localhost:{self.port}/hook" if tls else f"http://127.0.0.1:{self.port}/hook"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    verified, error = receiver.verifier.verify(body, headers), None
                except WebhookVerificationError as failure:
                    verified, error = None, str(failure)
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body, verified, error))
                    answer = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                if answer == REDIRECT:
                    self.send_response(307)
                    self.send_header("location", "/elsewhere")
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif answer == SILENT:
                    receiver.stopping.wait()
                elif answer == ENDLESS:
                    self.send_response(200)
                    self.end_headers()  # no length: the body lasts until the connection closes
                    chunk = b"x" * 65536
                    try:
                        while True:
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                else:
                    reply = json.dumps({"ok": answer < 300}).encode()
                    self.send_response(answer)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)

        return Handler

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, timeout_s: float = 30) -> list[Received]:
        """The first `count` requests, once they came (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            received = self.requests()
            if len(received) >= count:
                return received
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.requests())} requests, not {count}, in {timeout_s} s")

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

"""A stand-in for Supabase Storage on loopback, for testing `SupabaseObjectStore` through the real client.

It answers the calls `storage3` 2.34 makes, shaped like the real server (supabase/storage): errors are
HTTP 400 with the real status as a string in the body, e.g. `{"statusCode": "409", "error": "Duplicate",
...}`, except 500s; a missing or wrong `apikey` is refused by the API gateway (HTTP 401) before Storage.

Faults are injected per request, in the order requests arrive: `fail_next`, `hang_next`, `set_down`.
`requests_seen` and `uploads` let a test count what the client really sent.

    with FakeSupabaseStorage() as storage:
        store = SupabaseObjectStore(storage.url, storage.service_key, "bucket")  # or storage.new_store()
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from genmedia.outputs.storage import SupabaseObjectStore

PREFIX = "/storage/v1"


@dataclass
class Bucket:
    public: bool
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass
class StoredFile:
    data: bytes
    content_type: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class Refused(Exception):
    """An answer other than 200: raised by a route, written by the handler."""

    def __init__(self, http_status: int, body: dict):
        super().__init__(body)
        self.http_status = http_status
        self.body = body


def storage_error(status: int, error: str, message: str, code: str = "") -> Refused:
    """An error as supabase/storage renders it: HTTP 400 unless 500, the real status in the body."""
    body = {"statusCode": str(status), "code": code or error, "error": error, "message": message}
    return Refused(500 if status == 500 else 400, body)


def no_such_bucket() -> Refused:
    return storage_error(404, "Bucket not found", "Bucket not found", "NoSuchBucket")


def no_such_key() -> Refused:
    return storage_error(404, "not_found", "Object not found", "NoSuchKey")


class FakeSupabaseStorage:
    """Supabase Storage on 127.0.0.1:<free port>; `url` is what SUPABASE_URL would be."""

    def __init__(self, service_key: str = "test-service-role-key"):
        self.service_key = service_key
        self.buckets: dict[str, Bucket] = {}
        self.objects: dict[tuple[str, str], StoredFile] = {}
        self.requests_seen = 0
        self.uploads: collections.Counter[str] = collections.Counter()  # per object key, any bucket
        self.bucket_creations = 0  # attempts, including refused duplicates
        self._signed: dict[str, tuple[str, str, float]] = {}  # token -> bucket, key, expiry
        self._failures: collections.deque[int] = collections.deque()
        self._hangs: collections.deque[float] = collections.deque()
        self._down = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._http: ThreadingHTTPServer | None = None
        self._stores: list[SupabaseObjectStore] = []

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeSupabaseStorage:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.block_on_close = False  # a hanging request must not hold up stop()
        self._http.storage = self
        # A short poll interval, since stop() waits for the serving loop to notice.
        serve = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        for store in self._stores:
            store.close()
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> FakeSupabaseStorage:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def env(self, bucket: str = "genmedia") -> dict[str, str]:
        """The environment that points a genmedia service (`Settings.from_env`) at this storage."""
        return {
            "STORAGE_BACKEND": "supabase",
            "SUPABASE_URL": self.url,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_key,
            "SUPABASE_BUCKET": bucket,
        }

    def new_store(self, bucket: str | None = None, **options) -> SupabaseObjectStore:
        """A `SupabaseObjectStore` on a fresh bucket here, with a short timeout and retry budget.

        `options` go to the store (`public_bucket`, `timeout_s`, ...); `service_key` overrides the key it sends.
        The store is closed by `stop()`.
        """
        options = {"timeout_s": 0.5, "retry_budget_s": 2.0, "signed_url_ttl": 60, **options}
        service_key = options.pop("service_key", self.service_key)
        store = SupabaseObjectStore(self.url, service_key, bucket or f"test-{uuid.uuid4().hex[:12]}", **options)
        self._stores.append(store)
        return store

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next `n` requests are answered HTTP `status`, with an error body like Storage's own."""
        with self._lock:
            self._failures.extend([status] * n)

    def hang_next(self, n: int, seconds: float) -> None:
        """The next `n` requests wait `seconds` before being handled (set it past the client's timeout)."""
        with self._lock:
            self._hangs.extend([seconds] * n)

    def set_down(self, down: bool) -> None:
        """While down, every request is answered 503 by the gateway in front of Storage."""
        self._down = down

    def handle(self, method: str, target: str, headers: Message, body: bytes) -> tuple[int, str, bytes]:
        """One request: faults first, then the gateway's key check, then Storage's routes."""
        with self._lock:
            self.requests_seen += 1
            if self._down:
                return 503, "text/plain", b"upstream connect error or disconnect/reset before headers"
            failure = self._failures.popleft() if self._failures else None
            hang = self._hangs.popleft() if self._hangs else None
        if failure is not None:
            error = {"statusCode": str(failure), "code": "InternalError", "error": "internal", "message": "boom"}
            return failure, "application/json", json.dumps(error).encode()
        if hang is not None:
            self._stopping.wait(hang)
        url = urlsplit(target)
        path = unquote(url.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        try:
            if not path.startswith(f"{PREFIX}/"):
                raise Refused(404, {"message": "no Route matched with those values"})
            route = path.removeprefix(PREFIX)
            # Public and signed downloads are plain links: a browser fetches them without any key.
            if method == "GET" and route.startswith(("/object/public/", "/object/sign/")):
                return self._open_link(route, query)
            self._check_keys(headers)
            return self._route(method, route, headers, body)
        except Refused as refusal:
            return refusal.http_status, "application/json", json.dumps(refusal.body).encode()

    def _check_keys(self, headers: Message) -> None:
        if headers.get("apikey") != self.service_key:
            raise Refused(401, {"message": "Invalid API key", "hint": "Double check your Supabase API key."})
        authorization = headers.get("authorization")
        if authorization is None:
            message = "headers must have required property 'authorization'"
            raise storage_error(400, "Error", message, "InvalidJWT")
        if authorization != f"Bearer {self.service_key}":
            raise storage_error(403, "Unauthorized", "invalid signature", "InvalidJWT")

    def _route(self, method: str, route: str, headers: Message, body: bytes) -> tuple[int, str, bytes]:
        parts = route.strip("/").split("/")
        match method, parts:
            case "POST", ["bucket"]:
                return self._json(self._create_bucket(json.loads(body)))
            case "GET", ["bucket"]:
                return self._json([self._bucket_json(name) for name in self.buckets])
            case "GET", ["bucket", name]:
                self._bucket(name)
                return self._json(self._bucket_json(name))
            case "POST", ["object", "sign", bucket, *key] if key:
                return self._json(self._sign(bucket, "/".join(key), int(json.loads(body)["expiresIn"])))
            case "POST", ["object", "list", bucket]:
                return self._json(self._list(bucket, json.loads(body).get("prefix", "")))
            case "GET", ["object", "info", bucket, *key] if key:
                return self._json(self._info(bucket, "/".join(key)))
            case "POST" | "PUT", ["object", bucket, *key] if key:
                return self._json(self._upload(method, bucket, "/".join(key), headers, body))
            case "GET", ["object", bucket, *key] if key:
                stored = self._object(bucket, "/".join(key))
                return 200, stored.content_type, stored.data
            case "DELETE", ["object", bucket]:
                return self._json(self._remove(bucket, json.loads(body)["prefixes"]))
        raise Refused(404, {"message": f"Route {method}:{PREFIX}{route} not found", "error": "Not Found"})

    def _open_link(self, route: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        kind, bucket, *key_parts = route.removeprefix("/object/").split("/")
        key = "/".join(key_parts)
        if kind == "public":
            # The real server hides a private bucket behind "not found" on the public route.
            if not self._bucket(bucket).public:
                raise no_such_bucket()
        else:
            signed = self._signed.get(query.get("token", ""))
            if signed is None:
                raise storage_error(400, "InvalidJWT", "invalid signature", "InvalidJWT")
            if signed[:2] != (bucket, key):
                raise storage_error(400, "InvalidSignature", "The url do not match the signature")
            if time.time() > signed[2]:
                raise storage_error(400, "InvalidJWT", "jwt expired", "InvalidJWT")
        stored = self._object(bucket, key)
        return 200, stored.content_type, stored.data

    def _create_bucket(self, request: dict) -> dict:
        with self._lock:
            self.bucket_creations += 1
            if request["id"] in self.buckets:
                raise storage_error(409, "Duplicate", "The resource already exists", "BucketAlreadyExists")
            self.buckets[request["id"]] = Bucket(public=bool(request.get("public", False)))
        return {"name": request["id"]}

    def _upload(self, method: str, bucket: str, key: str, headers: Message, body: bytes) -> dict:
        self._bucket(bucket)
        data, content_type = _uploaded_file(headers, body)
        with self._lock:
            exists = (bucket, key) in self.objects
            if method == "POST" and exists and headers.get("x-upsert") != "true":
                raise storage_error(409, "Duplicate", "The resource already exists", "KeyAlreadyExists")
            if method == "PUT" and not exists:
                raise no_such_key()
            self.objects[bucket, key] = StoredFile(data, content_type)
            self.uploads[key] += 1
            return {"Key": f"{bucket}/{key}", "Id": self.objects[bucket, key].id}

    def _sign(self, bucket: str, key: str, expires_in: int) -> dict:
        self._object(bucket, key)
        token = secrets.token_urlsafe(16)
        self._signed[token] = (bucket, key, time.time() + expires_in)
        return {"signedURL": f"/object/sign/{bucket}/{key}?token={token}"}

    def _info(self, bucket: str, key: str) -> dict:
        stored = self._object(bucket, key)
        return {
            "id": stored.id,
            "name": key,
            "version": stored.id,
            "bucket_id": bucket,
            "size": len(stored.data),
            "content_type": stored.content_type,
            "cache_control": "max-age=3600",
            "etag": f'"{stored.id}"',
            "metadata": {},
            "last_modified": stored.created_at,
            "created_at": stored.created_at,
        }

    def _list(self, bucket: str, prefix: str) -> list[dict]:
        """One folder's entries, like Storage: files with their info, subfolders with `id: null`."""
        self._bucket(bucket)
        folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        entries = {}
        for stored_bucket, key in sorted(self.objects):
            if stored_bucket == bucket and key.startswith(folder):
                name, _, rest = key.removeprefix(folder).partition("/")
                entries[name] = {"name": name, "id": None} if rest else self._info(bucket, key) | {"name": name}
        return list(entries.values())

    def _remove(self, bucket: str, keys: list[str]) -> list[dict]:
        self._bucket(bucket)
        with self._lock:
            removed = [key for key in keys if self.objects.pop((bucket, key), None) is not None]
        return [{"name": key, "bucket_id": bucket} for key in removed]

    def _bucket(self, name: str) -> Bucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            raise no_such_bucket()
        return bucket

    def _bucket_json(self, name: str) -> dict:
        bucket = self._bucket(name)
        return {
            "id": name,
            "name": name,
            "owner": "",
            "public": bucket.public,
            "file_size_limit": None,
            "allowed_mime_types": None,
            "created_at": bucket.created_at,
            "updated_at": bucket.created_at,
        }

    def _object(self, bucket: str, key: str) -> StoredFile:
        self._bucket(bucket)
        stored = self.objects.get((bucket, key))
        if stored is None:
            raise no_such_key()
        return stored

    @staticmethod
    def _json(value: object) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(value).encode()


def _uploaded_file(headers: Message, body: bytes) -> tuple[bytes, str]:
    """The bytes and content type of an upload: the multipart field `file`, or else the raw body."""
    if headers.get_content_type() != "multipart/form-data":
        return body, headers.get_content_type()
    delimiter = b"--" + headers.get_param("boundary").encode()
    for part in body.split(delimiter)[1:-1]:
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part_headers = Message()
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            part_headers[name.strip()] = value.strip()
        if part_headers.get_param("name", header="content-disposition") == "file":
            return content.removesuffix(b"\r\n"), part_headers.get_content_type()
    raise storage_error(400, "InvalidRequest", "No content provided", "InvalidRequest")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

    def do_request(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        status, content_type, payload = self.server.storage.handle(self.command, self.path, self.headers, body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            # The client gave up (a hang ran past its timeout): nobody is left to answer.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_request

    def log_message(self, format: str, *args) -> None:
        pass  # quiet tests; assertions use the counters

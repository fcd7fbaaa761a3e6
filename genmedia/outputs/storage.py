"""Object storage: one interface, two backends (local directory, Supabase Storage).

Every generated file goes through `ObjectStore.put` and is answered as `{file_key, public_url}`. Keys are
content-addressed by the services (see `genmedia.contract.requests.content_key`), so a put is idempotent: writing the
same key twice writes the same bytes, which is what makes retrying an upload (and re-uploading a spooled
one, see `genmedia.outputs.spool`) safe.

Keys come from our own code, but they end up in file paths and URLs, so every backend method checks them
with `validate_key` first: a key is a relative path of plain segments, nothing that could climb out of the
storage root or be read differently by a file system, an HTTP server and a URL parser.

The Supabase backend talks to Storage through `storage3`, the storage client of the official `supabase`
package, with its own `httpx` client: that gives it a float per-request timeout, and a request hook that
keeps every request inside the operation's retry budget. The full `supabase.Client` would add an auth and a
realtime client that uploads never use.
"""

from __future__ import annotations

import contextvars
import json
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError
from storage3.utils import StorageException

from genmedia.settings import Settings

T = TypeVar("T")


class StorageError(Exception):
    """Base of storage failures; the message names the storage and what failed."""


class StorageUnavailable(StorageError):
    """The storage could not be reached or kept failing within the retry budget (answer 503)."""


class ObjectNotFound(StorageError):
    """No object under that key."""


class InvalidKey(ValueError):
    """A key that could escape the storage root or is otherwise malformed (answer 400)."""


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    content_type: str


class ObjectStore(Protocol):
    name: str

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def content_type(self, key: str) -> str | None:
        """The content type of the object under `key`; None when there is none."""
        ...

    def get(self, key: str) -> StoredObject: ...

    def public_url(self, key: str) -> str: ...


MAX_KEY_LENGTH = 512
# File systems allow 255 bytes a name; this leaves room for `.json` and the temporary-file affixes.
MAX_SEGMENT_LENGTH = 200
SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object path, else raise `InvalidKey` saying what is wrong.

    Segments are `[A-Za-z0-9._-]+` and may not start with a dot: that refuses `.` and `..`, and keeps
    names starting with a dot free for the stores' own files (temporary files, `.meta/`).
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"object key is {len(key)} characters long, the limit is {MAX_KEY_LENGTH}")
    if CONTROL_CHARACTERS.search(key):
        raise InvalidKey(f"object key {key!r} contains a control character (NUL, newline, ...)")
    if "\\" in key:
        raise InvalidKey(f"object key {key!r} contains a backslash; separate segments with '/'")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r} is absolute; keys are relative paths")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey(f"object key {key!r} has an empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise InvalidKey(f"object key {key!r} has a {segment!r} segment")
        if segment.startswith("."):
            raise InvalidKey(f"object key {key!r} has a segment starting with '.' ({segment!r})")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise InvalidKey(f"object key {key!r} has a segment longer than {MAX_SEGMENT_LENGTH} characters")
        if not SEGMENT.fullmatch(segment):
            raise InvalidKey(f"object key {key!r} has characters outside A-Z a-z 0-9 . _ - in {segment!r}")
    return key


def write_atomically(path: Path, data: bytes) -> None:
    """Write `path` so that readers (and a crash) see either the old file or the whole new one.

    The temporary file is unique per writer, so two writers of the same path never mix their bytes: the
    last `os.replace` wins whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class LocalObjectStore:
    """Objects as files under `root`; the gateway serves them at `GET /files/{key}`.

    The content type of each object is kept in `root/.meta/<key>.json`, written before the object itself,
    so an object that exists always has its content type.
    """

    name = "local storage"

    def __init__(self, root: Path, public_base_url: str):
        self.root = Path(root).resolve()
        self.public_base_url = public_base_url.rstrip("/")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path, meta = self._paths(key)
        try:
            write_atomically(meta, json.dumps({"content_type": content_type}).encode())
            write_atomically(path, data)
        except OSError as error:
            raise StorageUnavailable(f"{self.name}: could not write {key!r}: {error}") from error

    def exists(self, key: str) -> bool:
        path, _ = self._paths(key)
        return path.is_file()

    def content_type(self, key: str) -> str | None:
        path, meta = self._paths(key)
        # The content-type file is written first: an object that exists has one.
        return json.loads(meta.read_bytes())["content_type"] if path.is_file() else None

    def get(self, key: str) -> StoredObject:
        path, meta = self._paths(key)
        try:
            data = path.read_bytes()
            content_type = json.loads(meta.read_bytes())["content_type"]
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{self.name} has no object {key!r}") from None
        return StoredObject(data, content_type)

    def public_url(self, key: str) -> str:
        return f"{self.public_base_url}/files/{validate_key(key)}"

    def _paths(self, key: str) -> tuple[Path, Path]:
        """The object's file and its content-type file, both checked to stay under the root."""
        validate_key(key)
        path = self.root / key
        # validate_key already refuses `..`; resolving also catches a symlink inside the root that points out.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"object key {key!r} resolves outside {self.name}")
        return path, self.root / ".meta" / f"{key}.json"


# Transient failures are retried with exponential backoff and jitter, within the retry budget.
MAX_ATTEMPTS = 5
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0

# The end of the current operation's retry budget, read by the request hook of this thread's requests.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("storage_deadline", default=None)


class SupabaseObjectStore:
    """Objects in a Supabase Storage bucket, created on first upload if missing.

    Public buckets answer with the object's public URL (built locally, no request); private buckets with a
    signed URL valid `signed_url_ttl` seconds. Uploads always upsert, so a retried or repeated upload of a
    key succeeds instead of failing with "already exists".
    """

    def __init__(
        self,
        url: str,
        service_role_key: str,
        bucket: str,
        public_bucket: bool = True,
        signed_url_ttl: int = 3600,
        timeout_s: float = 5.0,
        retry_budget_s: float = 10.0,
    ):
        self.name = f"Supabase Storage ({bucket})"
        self.bucket_id = bucket
        self.public_bucket = public_bucket
        self.signed_url_ttl = signed_url_ttl
        self.timeout_s = timeout_s
        self.retry_budget_s = retry_budget_s
        self._service_role_key = service_role_key
        self._bucket_ready = False
        http = httpx.Client(
            timeout=timeout_s,
            http2=True,
            follow_redirects=True,
            event_hooks={"request": [self._keep_within_deadline]},
        )
        self._client = SyncStorageClient(
            f"{url.rstrip('/')}/storage/v1/",
            # The same two headers `supabase.create_client` sends: the API gateway checks `apiKey`,
            # Storage reads the role from the bearer token.
            {"apiKey": service_role_key, "Authorization": f"Bearer {service_role_key}"},
            http_client=http,
        )
        self._bucket = self._client.from_(bucket)

    def close(self) -> None:
        """Close the HTTP connections (a store otherwise lives as long as its process)."""
        self._client.session.close()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        # storage3 labels uploads text/plain unless told, and refuses an existing key unless upserting.
        options = {"content-type": content_type, "upsert": "true"}
        self._with_retries("upload", key, lambda: self._upload(key, data, options))

    def exists(self, key: str) -> bool:
        return self.content_type(key) is not None

    def content_type(self, key: str) -> str | None:
        validate_key(key)
        try:
            info = self._with_retries("check", key, lambda: self._bucket.info(key))
        except ObjectNotFound:
            return None
        return info.get("content_type") or "application/octet-stream"

    def get(self, key: str) -> StoredObject:
        validate_key(key)
        # `download` returns only the bytes, so the content type comes from the object's info.
        info, data = self._with_retries("download", key, lambda: (self._bucket.info(key), self._bucket.download(key)))
        return StoredObject(data, info.get("content_type") or "application/octet-stream")

    def public_url(self, key: str) -> str:
        validate_key(key)
        if self.public_bucket:
            return self._bucket.get_public_url(key)
        signed = self._with_retries(
            "sign a URL for", key, lambda: self._bucket.create_signed_url(key, self.signed_url_ttl)
        )
        return signed["signedURL"]

    def _upload(self, key: str, data: bytes, options: dict[str, str]) -> None:
        if not self._bucket_ready:
            self._create_bucket()
        self._bucket.upload(key, data, options)

    def _create_bucket(self) -> None:
        try:
            self._client.create_bucket(self.bucket_id, options={"public": self.public_bucket})
        except StorageApiError as error:
            # Storage answers an existing bucket with HTTP 400 and statusCode "409" in the body.
            if str(error.status) != "409":
                raise
        self._bucket_ready = True

    def _with_retries(self, operation: str, key: str, call: Callable[[], T]) -> T:
        """Run `call`, retrying transient failures until it succeeds or the retry budget is spent.

        Raises `ObjectNotFound` for a 404, `StorageError` for other refusals (a 4xx: retrying cannot
        help), `StorageUnavailable` once transient failures have used up the attempts or the budget.
        """
        started = time.monotonic()
        deadline = started + self.retry_budget_s
        token = _deadline.set(deadline)
        try:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    return call()
                # ValueError: an answer storage3 cannot read (e.g. a proxy's HTML page where JSON belongs).
                except (StorageException, httpx.HTTPError, ValueError) as error:
                    if not _is_transient(error):
                        raise self._refusal(operation, key, error) from None
                    last_error = error
                backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1)
                if attempt == MAX_ATTEMPTS or time.monotonic() + backoff >= deadline:
                    break
                time.sleep(backoff)
        finally:
            _deadline.reset(token)
        # `from None`: the httpx error chain holds the request, and with it the service role key.
        raise StorageUnavailable(
            f"{self.name} is unavailable: could not {operation} {key!r} in {attempt} attempts over "
            f"{time.monotonic() - started:.1f} s (last error: {self._describe(last_error)})"
        ) from None

    def _refusal(self, operation: str, key: str, error: Exception) -> StorageError:
        if isinstance(error, StorageApiError) and str(error.status) == "404":
            # A missing bucket (before the first upload creates it) means a missing object, too.
            return ObjectNotFound(f"{self.name} has no object {key!r} ({self._describe(error)})")
        return StorageError(f"{self.name} refused to {operation} {key!r}: {self._describe(error)}")

    def _describe(self, error: Exception) -> str:
        if isinstance(error, StorageApiError):
            text = f"{error.status} {error.code}: {error.message}"
        else:
            text = f"{type(error).__name__}: {error}"
        # Error texts echo server responses; make sure none can carry the key into a log.
        return text.replace(self._service_role_key, "***")[:300]

    def _keep_within_deadline(self, request: httpx.Request) -> None:
        """Shorten a request's timeout to what is left of the budget, so no attempt can overrun it."""
        deadline = _deadline.get()
        if deadline is not None:
            remaining = max(deadline - time.monotonic(), 0.01)
            request.extensions["timeout"] = httpx.Timeout(min(self.timeout_s, remaining)).as_dict()


def _is_transient(error: Exception) -> bool:
    """Timeouts, connection failures, 5xx and 429 (rate limited) answers may pass; other errors will not."""
    if isinstance(error, httpx.TransportError):
        return True
    if not isinstance(error, StorageApiError):
        return False
    # Storage answers most errors with HTTP 400 and the real status in the body (a lock timeout is
    # 400 with statusCode "503"), while a proxy in front answers with the real HTTP status: check both.
    statuses = {str(error.status)}
    if isinstance(error.__cause__, httpx.HTTPStatusError):
        statuses.add(str(error.__cause__.response.status_code))
    return any(status.startswith("5") or status == "429" for status in statuses)


def open_store(settings: Settings) -> ObjectStore:
    """The store that `settings` (STORAGE_BACKEND and its variables) asks for."""
    if settings.storage_backend == "supabase":
        return SupabaseObjectStore(
            settings.supabase_url,
            settings.supabase_service_role_key,
            settings.supabase_bucket,
            public_bucket=settings.supabase_public_bucket,
            signed_url_ttl=settings.supabase_signed_url_ttl,
            timeout_s=settings.storage_timeout_s,
            retry_budget_s=settings.storage_retry_budget_s,
        )
    return LocalObjectStore(settings.local_storage_dir, settings.public_base_url)

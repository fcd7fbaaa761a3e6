"""Request bodies, read bounded before any route parses them: of the route's type, capped, received within a
deadline, kept on disk past 64 KB, and, on an upload route, the form checked (field names, file names, files
not text).

BentoML reads a body whole, into memory, for as long as the client takes, and answers 500 for the forms it
cannot handle, so these checks run first, as ASGI middleware: inside the gateway's `AccessGuard` (after
its identity checks and its in-flight cap, so a body being received already holds a slot), and alone in
front of each model service (`BodyGuard`), so a model service served alone keeps the same bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from genmedia.contract.requests import MAX_UPLOAD_BYTES
from genmedia.settings import Settings, get_settings

JSON_BODY_LIMIT = 64 * 1024
# Multipart framing around an upload of at most MAX_UPLOAD_BYTES.
UPLOAD_BODY_LIMIT = MAX_UPLOAD_BYTES + 64 * 1024
# A body past this size is written to a temporary file as it arrives, so a slow upload costs disk, not memory.
IN_MEMORY_BYTES = JSON_BODY_LIMIT
REPLAY_CHUNK_BYTES = 64 * 1024
# BentoML keeps an upload in a temporary file named after it (`tmpXXXXXXXX<name>`), and a name is at most
# 255 bytes; each hop between services adds 11 more, so this leaves room for several.
MAX_FILENAME_BYTES = 128

# How the services of one `bentoml serve` call each other (an upload travels as its file's path). BentoML
# itself answers 415 to it in the service the outside reaches, so only the gateway's own calls come this way.
BENTOML_PICKLE = "application/vnd.bentoml+pickle"

# A refused body is still read (and dropped) up to this much before the refusal is sent, so that clients
# which send the whole body before reading (Python's urllib and requests) read the 413 instead of a reset
# connection (uvicorn closes a connection whose body was not read, and after an answer `receive` only
# reports a disconnect). Past it, or past the deadline, the refusal goes out at once. A client that asked
# `Expect: 100-continue` (curl) has sent nothing yet: it is answered at once and never sends the body.
REFUSED_BODY_DRAIN_BYTES = 64 * 1024 * 1024
REFUSED_BODY_DRAIN_S = 30

# What a refusal is sent with: (send, reason, status, message, extra headers).
Refuse = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class UploadField:
    """The one multipart field of an upload route, and how many files it takes."""

    name: str
    max_files: int = 1


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class SpooledBody:
    """A request body as received: in memory up to IN_MEMORY_BYTES, in a temporary file beyond."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115 (closed by close())
        self.size = 0

    def chunks(self) -> Iterator[bytes]:
        self.file.seek(0)
        while chunk := self.file.read(REPLAY_CHUNK_BYTES):
            yield chunk

    def replay(self, receive):
        """An ASGI `receive` that gives the app this body again, in chunks, then whatever `receive` gives."""
        chunks = self.chunks()
        sent = 0
        done = False

        async def receive_replayed():
            nonlocal sent, done
            if done:
                return await receive()
            chunk = next(chunks, b"")
            sent += len(chunk)
            done = sent >= self.size
            return {"type": "http.request", "body": chunk, "more_body": not done}

        return receive_replayed

    def close(self) -> None:
        self.file.close()


class BodyReceiver:
    """The ASGI `receive` of one request, remembering whether the client has sent all of its body."""

    def __init__(self, receive, headers: Headers):
        self._receive = receive
        declared = headers.get("content-length", "")
        self.complete = (
            not has_body(headers)
            or headers.get("expect", "").lower() == "100-continue"
            # A body declared past the bound could never be read whole: the refusal goes out at once.
            or (declared.isdigit() and int(declared) > REFUSED_BODY_DRAIN_BYTES)
        )

    async def __call__(self):
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            self.complete = True
        return message

    async def drain(self) -> None:
        """Read and drop what is left of a refused body, up to a bound, before the refusal is sent."""
        drained = 0

        async def read_rest() -> None:
            nonlocal drained
            while not self.complete and drained <= REFUSED_BODY_DRAIN_BYTES:
                drained += len((await self()).get("body", b""))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read_rest(), REFUSED_BODY_DRAIN_S)


def has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def content_type_problem(headers: Headers) -> str | None:
    """Why a JSON route's body has the wrong media type, or None.

    JSON routes take `application/json` only: a browser sends `text/plain` (and forms) cross-site without a
    CORS preflight, so accepting them would let any web page spend an open gateway's GPU. A request without
    a body (a bodiless POST) needs no type; the services of one `bentoml serve` call each other in pickle.
    """
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not has_body(headers) or media_type in ("application/json", BENTOML_PICKLE):
        return None
    sent = f"'{media_type}'" if media_type else "no Content-Type"
    return f"Content-Type: this route takes application/json, not {sent}."


async def read_body(receive, limit: int, timeout_s: float) -> SpooledBody:
    """The whole request body, spooled. Raises `BodyTooLarge` as soon as it grows past `limit` bytes,
    `TimeoutError` when it has not all arrived within `timeout_s`, `ClientGone` if the client left."""
    body = SpooledBody()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientGone
                chunk = message.get("body", b"")
                body.size += len(chunk)
                if body.size > limit:
                    raise BodyTooLarge
                body.file.write(chunk)
                if not message.get("more_body"):
                    return body
    except BaseException:
        body.close()
        raise


async def send_error(send, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
    """Answer `{"error": message}` with `status`, from middleware (before any route has run)."""
    body = json.dumps({"error": message}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def refuse_plainly(send, reason: str, status: int, message: str, headers=None) -> None:
    await send_error(send, status, message, headers)


class BodyGuard:
    """ASGI middleware: every request's body capped (413), received within `BODY_TIMEOUT_S` (408), spooled,
    and checked as a form (400) before the app sees it; `uploads` names each upload route's file field."""

    def __init__(
        self,
        app,
        uploads: Mapping[str, UploadField] | None = None,
        settings: Settings | None = None,
        refuse: Refuse = refuse_plainly,
    ):
        self.app = app
        self.uploads = dict(uploads or {})
        self.settings = settings or get_settings()
        self.refuse = refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = self.uploads.get(scope["path"])
        limit = UPLOAD_BODY_LIMIT if upload else JSON_BODY_LIMIT
        headers = Headers(scope=scope)
        receive = BodyReceiver(receive, headers)
        if upload is None and (wrong_type := content_type_problem(headers)) is not None:
            await receive.drain()
            return await self.refuse(send, "media_type", 415, wrong_type)
        too_large = (
            f"{upload.name}: the upload is over the {MAX_UPLOAD_BYTES // 2**20} MB limit."
            if upload
            else f"Request body is over {limit} bytes."
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await receive.drain()
            return await self.refuse(send, "too_large", 413, too_large)
        timeout_s = self.settings.body_timeout_s
        try:
            body = await read_body(receive, limit, timeout_s)
        except BodyTooLarge:
            await receive.drain()
            return await self.refuse(send, "too_large", 413, too_large)
        except TimeoutError:
            # Closing the connection drops the sender; uvicorn closes it after an answer that says so.
            return await self.refuse(
                send,
                "slow_body",
                408,
                f"body: not received within {timeout_s:g} s; send it faster, or smaller.",
                {"Connection": "close"},
            )
        except ClientGone:
            return None
        try:
            if (problem := await form_problem(headers, body, upload)) is not None:
                return await self.refuse(send, "invalid", 400, problem)
            return await self.app(scope, body.replay(receive), send)
        finally:
            body.close()


async def form_problem(headers: Headers, body: SpooledBody, upload: UploadField | None) -> str | None:
    """What is wrong with a form body, or None. BentoML answers 500 for what Starlette's form parser refuses
    (a missing boundary, broken framing, over 1000 fields), for a file under another field name, and for a
    file name too long for a temporary file; and it downloads a text value given for a file field as a URL,
    from the service itself. All are refused here first."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == BENTOML_PICKLE:
        return None
    if content_type == "multipart/form-data":
        parser = MultiPartParser
    elif content_type == "application/x-www-form-urlencoded":
        parser = FormParser
    elif upload is not None:
        return f"{upload.name}: send the image as a multipart/form-data file part named '{upload.name}'."
    else:
        return None

    async def stream():
        for chunk in body.chunks():
            yield chunk

    try:
        form = await parser(headers, stream()).parse()
    except MultiPartException as error:
        return f"body: {error.message}"
    try:
        return upload_problem(form, upload) if upload is not None else None
    finally:
        await form.close()


def upload_problem(form: FormData, upload: UploadField) -> str | None:
    """What is wrong with an upload route's form: only its file field, holding files, with sane names."""
    how = f"send the image as the multipart file field '{upload.name}'"
    for name, _ in form.multi_items():
        if name != upload.name:
            return f"{name[:64]}: not a field of this route; {how}."
    values = form.getlist(upload.name)
    if not values:
        return f"{upload.name}: missing; {how}."
    if len(values) > upload.max_files:
        return f"{upload.name}: {len(values)} files sent; at most {upload.max_files} are taken."
    for value in values:
        if not isinstance(value, UploadFile):
            return f"{upload.name}: send the file itself as a multipart file part (text and URLs are not fetched)."
        filename = value.filename or ""
        if len(filename.encode()) > MAX_FILENAME_BYTES:
            return f"{upload.name}: the file name is over {MAX_FILENAME_BYTES} bytes; send it under a shorter one."
        if any(ord(character) < 32 or character == "\x7f" for character in filename):
            return f"{upload.name}: the file name has control characters; send it under a plain one."
    return None

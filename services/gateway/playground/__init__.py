"""The playground: one page at `/` to try all three capabilities from a browser, unless `PLAYGROUND=false`.

Plain HTML, CSS and JavaScript beside this file, no build step and nothing from another host; this
middleware serves the page at `/` and its assets under `/playground/`. The page calls the public routes
like any client (its key in the `Authorization` header only), so it needs nothing of the gateway but the
two facts it renders into the page: whether a key is needed and the upload limit. Its Content-Security-Policy
allows this origin, plus the storage origin `public_url`s point at (for the `<img>` and `<audio>`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import urlsplit

from starlette.responses import Response

from genmedia.contract.requests import MAX_UPLOAD_BYTES
from genmedia.settings import Settings, get_settings

PAGE_DIR = Path(__file__).parent
PAGE_PATH = "/"
ASSET_PREFIX = "/playground/"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    # Named in the page, so the browser never asks `/favicon.ico` (an API path: 401 without a key).
    "icon.svg": "image/svg+xml",
}


def storage_origin(settings: Settings) -> str:
    """The scheme://host[:port] that `public_url`s point at."""
    base = settings.supabase_url if settings.storage_backend == "supabase" else settings.public_base_url
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(settings: Settings) -> str:
    media = f"'self' {storage_origin(settings)}"
    return "; ".join(
        (
            "default-src 'self'",
            # blob: is the caption panel's preview of a file that never left the page.
            f"img-src {media} blob:",
            f"media-src {media}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


@functools.cache
def page(needs_key: bool) -> bytes:
    html = (PAGE_DIR / "index.html").read_text()
    html = html.replace("{{needs_key}}", "true" if needs_key else "false")
    return html.replace("{{max_upload_bytes}}", str(MAX_UPLOAD_BYTES)).encode()


class Playground:
    """ASGI middleware: `GET /` is the page and `/playground/*` its assets; with PLAYGROUND=false, nothing."""

    def __init__(self, app, settings: Settings | None = None):
        self.app = app
        self.settings = settings or get_settings()
        self.headers = {
            "Content-Security-Policy": content_security_policy(self.settings),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # A new release's page and scripts must arrive together.
            "Cache-Control": "no-cache",
        }

    async def __call__(self, scope, receive, send):
        if self.settings.playground and scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            if path == PAGE_PATH:
                body, media_type = page(bool(self.settings.gateway_api_keys)), "text/html; charset=utf-8"
                return await self.answer(scope, receive, send, body, media_type)
            if path.startswith(ASSET_PREFIX) and (name := path[len(ASSET_PREFIX) :]) in ASSETS:
                return await self.answer(scope, receive, send, (PAGE_DIR / name).read_bytes(), ASSETS[name])
        await self.app(scope, receive, send)

    async def answer(self, scope, receive, send, body: bytes, media_type: str) -> None:
        response = Response(body if scope["method"] == "GET" else b"", media_type=media_type, headers=self.headers)
        if scope["method"] == "HEAD":
            response.headers["content-length"] = str(len(body))
        await response(scope, receive, send)

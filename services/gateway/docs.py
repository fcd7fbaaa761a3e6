"""The API page at `/docs`, where the contract puts it, with the spec beside it at `/docs.json`.

BentoML serves its OpenAPI UI at `/`; the gateway gives `/` to the playground, so `/docs` is answered with
BentoML's page (its links are relative, `./docs.json` and `./static_content/…`, and resolve the same from
`/docs`). With the playground off (`PLAYGROUND=false`), `/` redirects to `/docs`; with it on, the playground
middleware (`services.gateway.playground`, outside this one) answers `/` first.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse


class ApiDocs:
    """ASGI middleware: `/docs` serves BentoML's API page; `/`, when it reaches here, redirects there."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            if scope["path"] == "/":
                return await RedirectResponse("/docs", status_code=307)(scope, receive, send)
            if scope["path"] == "/docs":
                scope = {**scope, "path": "/", "raw_path": b"/"}
        await self.app(scope, receive, send)

"""`GET /files/{file_key}`: the bytes behind a local-storage `public_url` (Supabase serves its own)."""

from __future__ import annotations

import asyncio
import functools

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from genmedia.contract.errors import Withheld, error_response
from genmedia.outputs import WITHHELD_CONTENT_TYPE
from genmedia.outputs.storage import InvalidKey, LocalObjectStore, ObjectNotFound, open_store, validate_key
from genmedia.settings import get_settings


@functools.cache
def files_store() -> LocalObjectStore | None:
    """The local store `/files` serves from; None when outputs live in Supabase Storage."""
    store = open_store(get_settings())
    return store if isinstance(store, LocalObjectStore) else None


async def serve_file(request) -> Response:
    store = files_store()
    if store is None:
        return error_response(404, "Files are served by the storage backend; use the public_url you were given.")
    try:
        stored = await asyncio.to_thread(store.get, validate_key(request.path_params["file_key"]))
    except InvalidKey as error:
        return error_response(400, f"file_key: {error}")
    except ObjectNotFound:
        return error_response(404, "No file under that key.")
    if stored.content_type == WITHHELD_CONTENT_TYPE:
        withheld = Withheld()
        return error_response(withheld.status, withheld.message)
    return Response(
        stored.data, media_type=stored.content_type, headers={"Cache-Control": "public, max-age=31536000, immutable"}
    )


files_app = Starlette(routes=[Route("/{file_key:path}", serve_file, methods=["GET"])])

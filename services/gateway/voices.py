"""`GET /voices`: the named voices a speech request may give as `voice`, with the description each stands for."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from genmedia.contract.voices import VOICES


async def list_voices(request) -> JSONResponse:
    return JSONResponse({"voices": [{"name": name, "description": text} for name, text in VOICES.items()]})


# Mounted at "/": BentoML's mounts are passive, so this claims `/voices` and nothing else.
voices_app = Starlette(routes=[Route("/voices", list_voices, methods=["GET"])])

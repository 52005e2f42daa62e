"""``POST /infer``: msgpack request or a raw structure file in, msgpack results out."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response

from gears_h_core.io.wire import CONTENT_TYPE
from service.deps import get_engine, read_body, request_deadline, require_api_key
from service.engine import body_kind

router = APIRouter()


@router.post("/infer", dependencies=[Depends(require_api_key)])
async def infer(request: Request) -> Response:
    start = time.monotonic()
    engine = get_engine(request)
    async with engine.track():
        deadline = request_deadline(request, start)
        engine.check_accepting()
        kind = body_kind(request.headers.get("content-type"))
        body = await read_body(request, engine.settings.max_body_bytes)
        payload = await engine.infer(body, kind, deadline)
    return Response(content=payload, media_type=CONTENT_TYPE)

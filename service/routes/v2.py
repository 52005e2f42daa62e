"""KServe v2 / Open Inference Protocol: health, server and model metadata.

Health paths (and ``/v2/models/{name}/ready``) never need the API key.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from service.deps import get_engine, require_api_key
from service.engine import RETRY_NOT_READY_S
from service.errors import ServiceError

router = APIRouter(prefix="/v2")


def _not_ready(request: Request) -> JSONResponse:
    engine = get_engine(request)
    try:
        engine.check_accepting()
    except ServiceError as exc:
        return JSONResponse(
            {"ready": False, "error": exc.message}, status_code=503, headers=exc.headers()
        )
    return JSONResponse({"ready": False, "error": "not ready"}, status_code=503)


@router.get("/health/live")
async def live(request: Request) -> JSONResponse:
    engine = get_engine(request)
    if engine.live:
        return JSONResponse({"live": True, "phase": engine.phase.value})
    return JSONResponse(
        {"live": False, "phase": engine.phase.value, "error": engine.detail},
        status_code=503,
        headers={"Retry-After": str(RETRY_NOT_READY_S)},
    )


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    if get_engine(request).ready:
        return JSONResponse({"ready": True})
    return _not_ready(request)


@router.get("", dependencies=[Depends(require_api_key)])
async def server_metadata(request: Request) -> dict[str, Any]:
    return get_engine(request).server_metadata()


@router.get("/models/{name}", dependencies=[Depends(require_api_key)])
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    return get_engine(request).model_metadata(name)


@router.get("/models/{name}/ready")
async def model_ready(name: str, request: Request) -> JSONResponse:
    engine = get_engine(request)
    engine.require_model(name)
    if engine.ready:
        return JSONResponse({"name": name, "ready": True})
    return _not_ready(request)

"""``GET /metrics``: Prometheus text format (open, no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.deps import get_engine
from service.metrics import CONTENT_TYPE_LATEST

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_engine(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

"""``GET /metrics`` for Prometheus; behind the API keys when keys are configured."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from diffuserve.api.deps import authenticate, parts

router = APIRouter()


@router.get("/metrics", dependencies=[Depends(authenticate)], include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(parts(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

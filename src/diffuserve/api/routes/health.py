"""Liveness and readiness; no API key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from diffuserve.api.deps import parts

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and answering."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Every configured model is loaded: 200, else 503 with what is still loading."""
    models = {model.name: model.loaded for model in await parts(request).engine.models()}
    is_ready = all(models.values())
    return JSONResponse(
        {"status": "ready" if is_ready else "loading", "models": models},
        status_code=200 if is_ready else 503,
        headers={} if is_ready else {"Retry-After": "5"},
    )

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
    """Every model meant to load at start is loaded: 200, else 503; with which models
    are loaded now."""
    engine = parts(request).engine
    models = {model.name: model.loaded for model in await engine.models()}
    is_ready = await engine.ready()
    return JSONResponse(
        {"status": "ready" if is_ready else "loading", "models": models},
        status_code=200 if is_ready else 503,
        headers={} if is_ready else {"Retry-After": "5"},
    )

"""``GET /v1/models`` and ``GET /v1/models/{id}`` in OpenAI's list format."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from diffuserve.api.deps import authenticate, parts
from diffuserve.errors import ModelNotFoundError
from diffuserve.protocol import ModelList, ModelObject

router = APIRouter(dependencies=[Depends(authenticate)])

OWNER = "diffuserve"


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    registry = parts(request).registry
    return ModelList(
        data=[
            ModelObject(id=name, created=model.created, owned_by=OWNER)
            for name, model in registry.names()
        ]
    )


@router.get("/v1/models/{model_id:path}", response_model=ModelObject)
async def retrieve_model(model_id: str, request: Request) -> ModelObject:
    registry = parts(request).registry
    for name, model in registry.names():
        if name == model_id:
            return ModelObject(id=name, created=model.created, owned_by=OWNER)
    raise ModelNotFoundError(model_id)

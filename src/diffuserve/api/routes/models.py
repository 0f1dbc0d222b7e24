"""``GET /v1/models`` and ``GET /v1/models/{id}`` in OpenAI's list format."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from diffuserve.api.deps import authenticate, parts
from diffuserve.protocol.common import ModelList, ModelObject
from diffuserve.protocol.errors import ModelNotFoundError

router = APIRouter(dependencies=[Depends(authenticate)])

OWNER = "diffuserve"


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    catalog = parts(request).service.catalog
    return ModelList(
        data=[ModelObject(id=name, created=catalog.created, owned_by=OWNER, root=spec.name)
              for name, spec in catalog.names()]
    )


@router.get("/v1/models/{model_id:path}", response_model=ModelObject)
async def retrieve_model(model_id: str, request: Request) -> ModelObject:
    catalog = parts(request).service.catalog
    for name, spec in catalog.names():
        if name == model_id:
            return ModelObject(id=name, created=catalog.created, owned_by=OWNER,
                               root=spec.name)
    raise ModelNotFoundError(model_id)

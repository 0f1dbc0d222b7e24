"""``GET /v1/models`` and ``GET /v1/models/{id}`` in OpenAI's list format, each entry with
the state of the weights that draw for it; ``POST /v1/models/{id}/load`` and
``/unload`` for admin keys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from diffuserve.api.auth import Client
from diffuserve.api.deps import authenticate, parts
from diffuserve.api.errors import PermissionDeniedError, ServiceUnavailableError
from diffuserve.config import ModelSpec
from diffuserve.engine.errors import ModelLoadFailed
from diffuserve.engine.types import ModelStatus
from diffuserve.protocol.common import ModelList, ModelObject
from diffuserve.protocol.errors import ModelNotFoundError

router = APIRouter(dependencies=[Depends(authenticate)])

OWNER = "diffuserve"

NOT_ADMIN = ("This key may not load or unload models: that takes a key with role=admin "
             "in the server's keys file.")


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    catalog = parts(request).service.catalog
    states = {status.name: status for status in await parts(request).engine.models()}
    return ModelList(data=[_entry(request, name, spec, states.get(spec.engine_name))
                           for name, spec in catalog.names()])


@router.get("/v1/models/{model_id:path}", response_model=ModelObject)
async def retrieve_model(model_id: str, request: Request) -> ModelObject:
    name, spec = _named(request, model_id)
    return _entry(request, name, spec, await parts(request).engine.model(spec.engine_name))


@router.post("/v1/models/{model_id:path}/load", response_model=ModelObject)
async def load_model(model_id: str, request: Request,
                     client: Annotated[Client, Depends(authenticate)]) -> ModelObject:
    """Load the weights that draw for ``model_id`` (a derived model's: its base's), making
    room as a request would; answered once they are loaded."""
    name, spec = _admin_named(request, model_id, client)
    try:
        status = await parts(request).engine.load_model(spec.engine_name)
    except ModelLoadFailed as exc:  # an admin is told why (the server's log says it too)
        raise ServiceUnavailableError(str(exc), code="model_load_failed") from exc
    return _entry(request, name, spec, status)


@router.post("/v1/models/{model_id:path}/unload", response_model=ModelObject)
async def unload_model(model_id: str, request: Request,
                       client: Annotated[Client, Depends(authenticate)]) -> ModelObject:
    """Unload them once the requests using them are done; answered then. A request that
    comes later loads them again."""
    name, spec = _admin_named(request, model_id, client)
    return _entry(request, name, spec,
                  await parts(request).engine.unload_model(spec.engine_name))


def _named(request: Request, model_id: str) -> tuple[str, ModelSpec]:
    return _find(parts(request).service.catalog.names(), model_id)


def _admin_named(request: Request, model_id: str, client: Client) -> tuple[str, ModelSpec]:
    if not client.admin:
        raise PermissionDeniedError(NOT_ADMIN, code="insufficient_permissions")
    return _named(request, model_id)


def _find(names: Iterable[tuple[str, ModelSpec]], model_id: str) -> tuple[str, ModelSpec]:
    for name, spec in names:
        if name == model_id:
            return name, spec
    raise ModelNotFoundError(model_id)


def _entry(request: Request, name: str, spec: ModelSpec,
           status: ModelStatus | None) -> ModelObject:
    catalog = parts(request).service.catalog
    state = status or ModelStatus(spec.engine_name, loaded=False)
    return ModelObject(id=name, created=catalog.created, owned_by=OWNER, root=spec.name,
                       loaded=state.loaded, device=state.device, dtype=state.dtype,
                       quantize=state.quantize, weight_bytes=state.weight_bytes)

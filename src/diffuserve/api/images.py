"""``POST /v1/images/generations`` and the signed image files."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from diffuserve.api.deps import parts, request_id, require_api_key
from diffuserve.errors import NotFoundError
from diffuserve.protocol import (
    ImageGenerationRequest,
    ImagesResponse,
    parse_generation_request,
)
from diffuserve.storage.signing import FILES_ROUTE

router = APIRouter()


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    dependencies=[Depends(require_api_key)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": ImageGenerationRequest.model_json_schema()}
            },
        }
    },
)
async def create_image(request: Request) -> ImagesResponse:
    """Create images from a prompt (OpenAI's ``images.generate``)."""
    server = parts(request)
    body = parse_generation_request(await request.body())
    return await server.service.generate(
        body, base_url=server.base_url(request), request_id=request_id(request)
    )


@router.get(FILES_ROUTE + "/{name}", response_class=FileResponse)
async def image_file(
    name: str,
    request: Request,
    expires: Annotated[str | None, Query(max_length=20)] = None,
    sig: Annotated[str | None, Query(max_length=128)] = None,
) -> FileResponse:
    """Serve a generated image to whoever holds its signed link; no API key needed."""
    server = parts(request)
    server.signer.verify(name, expires, sig, time.time())
    path = server.store.path_of(name)
    if path is None:
        raise NotFoundError("This image no longer exists.", code="image_not_found")
    remaining = max(0, int(expires or 0) - int(time.time()))
    return FileResponse(
        path,
        media_type="image/png",
        headers={"Cache-Control": f"private, max-age={remaining}"},
    )

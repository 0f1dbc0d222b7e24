"""``POST /v1/images/generations`` and the signed image files."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from diffuserve.api.deps import authenticate, parts, request_id
from diffuserve.auth import Client
from diffuserve.errors import APIError, NotFoundError, RateLimitError
from diffuserve.protocol import ImageGenerationRequest, parse_generation_request
from diffuserve.storage.signing import FILES_ROUTE

router = APIRouter()


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.post(
    "/v1/images/generations",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": ImageGenerationRequest.model_json_schema()}
            },
        }
    },
)
async def create_image(
    request: Request, client: Annotated[Client, Depends(authenticate)]
) -> JSONResponse:
    """Create images from a prompt (OpenAI's ``images.generate``)."""
    server = parts(request)
    started = time.monotonic()
    model = "unknown"
    status = 500
    limit_headers: dict[str, str] = {}
    disconnected: asyncio.Task[None] | None = None
    try:
        body = parse_generation_request(await request.body())
        model = server.registry.served_name(body.model)
        server.metrics.count_user(body.user)
        try:
            limit_headers = server.limiter.acquire(
                client.id, client.name, client.limits, images=body.n if body.n else 1
            )
        except RateLimitError:
            server.metrics.rate_limited.inc()
            raise
        disconnected = asyncio.create_task(_until_disconnect(request))
        result = await server.service.generate(
            body,
            base_url=server.base_url(request),
            request_id=request_id(request),
            client_id=client.id,
            disconnected=disconnected,
        )
        status = 200
        return JSONResponse(result.model_dump(exclude_none=True), headers=limit_headers)
    except APIError as error:
        status = error.status_code
        error.headers = {**limit_headers, **error.headers}
        raise
    finally:
        if disconnected is not None:
            disconnected.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await disconnected
        server.metrics.requests.labels(model, str(status)).inc()
        server.metrics.request_seconds.labels(model).observe(time.monotonic() - started)


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

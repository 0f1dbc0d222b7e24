"""``POST /v1/images/generations``: parse, plan, admit, draw."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from diffuserve.api.admission import RequestRecord
from diffuserve.api.auth import Client
from diffuserve.api.deps import authenticate, parts, request_id
from diffuserve.api.disconnect import unless_client_leaves
from diffuserve.api.errors import is_mapped, to_api_error
from diffuserve.api.sse import event_stream
from diffuserve.protocol.common import ImagesResponse
from diffuserve.protocol.generations import ImageGenerationRequest, parse_generation_request

router = APIRouter()


@router.post(
    "/v1/images/generations",
    responses={200: {"model": ImagesResponse, "description": "The images; with stream=true, "
                     "Server-Sent Events (image_generation.partial_image, "
                     "image_generation.completed)",
                     "content": {"text/event-stream": {"schema": {
                         "type": "object", "required": ["event", "data"],
                         "properties": {"event": {"type": "string"},
                                        "data": {"type": "string"}}}}}}},
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
) -> Response:
    """Create images from a prompt (OpenAI's ``images.generate``)."""
    server = parts(request)
    record = RequestRecord()
    limit_headers: dict[str, str] = {}
    try:
        body = parse_generation_request(await request.body())
        record.model = server.service.catalog.served_name(body.model)
        plan = server.service.plan(body)
        await server.service.moderate(plan, request_id(request))
        limit_headers = server.admission.admit(client, images=plan.images,
                                               user=plan.request.end_user)
        if plan.request.options.stream:
            events = server.service.stream(plan, request_id=request_id(request),
                                           client_id=client.id)
            # Until the engine accepts the work, a refusal still gets its own status.
            await unless_client_leaves(request, events.__anext__())
            record.status = 200
            return event_stream(events, request_id=request_id(request),
                                headers=limit_headers)
        result = await unless_client_leaves(request, server.service.generate(
            plan, base_url=server.base_url(request), request_id=request_id(request),
            client_id=client.id))
        record.status = 200
        return JSONResponse(result.model_dump(exclude_none=True), headers=limit_headers)
    except Exception as exc:
        error = to_api_error(exc)
        record.status = error.status_code
        if not is_mapped(exc):
            raise  # a bug: the catch-all handler logs it with its traceback
        error.headers = {**limit_headers, **error.headers}
        raise error from exc
    finally:
        server.admission.finish(record)

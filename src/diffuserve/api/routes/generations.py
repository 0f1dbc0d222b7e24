"""``POST /v1/images/generations``: parse, plan, admit, draw."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from diffuserve.api.auth import Client
from diffuserve.api.deps import ServerParts, authenticate
from diffuserve.api.imaging import answer
from diffuserve.protocol.generations import parse_generation_request
from diffuserve.service.planning import GenerationPlan

router = APIRouter()


# The body and the answers are published by diffuserve.api.openapi (from the protocol's
# rule tables), not declared here.
@router.post("/v1/images/generations")
async def create_image(
    request: Request, client: Annotated[Client, Depends(authenticate)]
) -> Response:
    """Create images from a prompt (OpenAI's ``images.generate``)."""

    async def planner(server: ServerParts, label: Callable[[str | None], None]
                      ) -> GenerationPlan:
        body = parse_generation_request(await request.body())
        label(body.model)
        return server.service.plan(body)

    return await answer(request, client, planner)

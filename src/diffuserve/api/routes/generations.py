"""``POST /v1/images/generations``: read the body, then the one flow of the image routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from diffuserve.api.auth import Client
from diffuserve.api.deps import authenticate
from diffuserve.api.imaging import answer
from diffuserve.protocol.generations import ImageGenerationRequest, parse_generation_request

router = APIRouter()


async def read_generation(request: Request) -> ImageGenerationRequest:
    """The JSON body, whatever its ``Content-Type`` (as OpenAI reads it)."""
    return parse_generation_request(await request.body())


# The body and the answers are published by diffuserve.api.openapi (from the protocol's
# rule tables), not declared here.
@router.post("/v1/images/generations")
async def create_image(
    request: Request, client: Annotated[Client, Depends(authenticate)]
) -> Response:
    """Create images from a prompt (OpenAI's ``images.generate``)."""
    return await answer(request, client, read_generation)

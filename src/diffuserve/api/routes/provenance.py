"""``POST /v1/content_provenance_checks``: what an image says of where it came from (its
C2PA manifest, validated; this server's watermark), as OpenAI answers it."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from diffuserve.api.auth import Client
from diffuserve.api.deps import authenticate, parts
from diffuserve.api.routes.edits import read_form
from diffuserve.protocol.provenance import read_check_upload

router = APIRouter()

CHECKS_ROUTE = "/v1/content_provenance_checks"


@router.post(CHECKS_ROUTE)
async def create_check(
    request: Request, client: Annotated[Client, Depends(authenticate)]
) -> Response:
    """Check an image for content provenance (OpenAI's
    ``content_provenance_checks.create``): multipart, one ``file`` (PNG, JPEG or WebP)."""
    server = parts(request)
    probed = read_check_upload(await read_form(request))
    # Valid, then admitted: a request against the key's limits, no image drawn.
    headers = await server.admission.admit(client, images=0, user=None)
    check = await server.checks.check(probed)
    return Response(orjson.dumps(check.model_dump(mode="json", exclude_none=True)),
                    headers=headers, media_type="application/json")

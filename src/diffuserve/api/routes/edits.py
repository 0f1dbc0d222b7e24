"""``POST /v1/images/edits`` and ``POST /v1/images/variations``: images in, images out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from diffuserve.api.auth import Client
from diffuserve.api.deps import authenticate, parts
from diffuserve.api.imaging import answer
from diffuserve.protocol.common import load_json
from diffuserve.protocol.edits import (
    EditBody,
    Form,
    VariationBody,
    read_edit_form,
    read_edit_json,
    read_variation_form,
)
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.uploads import Upload

router = APIRouter()

#: Paths whose bodies carry images, and so get the upload size limit.
UPLOAD_PATHS = ("/v1/images/edits", "/v1/images/variations")
#: Files and fields one form may hold: 16 images, a mask, and every field twice over.
MAX_FORM_FILES = 17
MAX_FORM_FIELDS = 64
#: The largest single part: one GPT-image upload (< 50 MB).
MAX_PART_BYTES = 50 << 20


async def read_form(request: Request) -> Form:
    """The multipart form as names → strings and uploads (python-multipart, bounded)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError(
            "Invalid Content-Type header: this route takes multipart/form-data.",
            param="Content-Type", code="invalid_value")
    try:
        form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS,
                                  max_part_size=MAX_PART_BYTES)
    except HTTPException as exc:  # Starlette's word for a malformed multipart body
        if exc.status_code != 400:
            raise  # the body limit's 413
        raise InvalidRequestError(f"The multipart body could not be read: {exc.detail}",
                                  code="invalid_multipart") from None
    values: dict[str, list[str | Upload]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            values.setdefault(name, []).append(Upload(
                value.filename or name, value.content_type or "", data))
        else:
            values.setdefault(name, []).append(value)
    await form.close()
    return values


async def read_edit(request: Request) -> EditBody:
    """The edit as multipart, or as JSON with data URLs (http(s) URLs too where the
    operator allows them: fetched by the service once the request is admitted)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        return read_edit_json(load_json(await request.body()),
                              remote_allowed=parts(request).allow_remote_image_urls)
    return read_edit_form(await read_form(request))


async def read_variation(request: Request) -> VariationBody:
    return read_variation_form(await read_form(request))


# Bodies and answers are published by diffuserve.api.openapi, from the protocol's tables.
@router.post("/v1/images/edits")
async def edit_image(
    request: Request, client: Annotated[Client, Depends(authenticate)]
) -> Response:
    """Edit images (OpenAI's ``images.edit``): inpainting where the mask is clear, image
    to image without one; multipart, or JSON with data URLs."""
    return await answer(request, client, read_edit)


@router.post("/v1/images/variations")
async def create_variation(
    request: Request, client: Annotated[Client, Depends(authenticate)]
) -> Response:
    """Variations of an image (OpenAI's ``images.create_variation``)."""
    return await answer(request, client, read_variation)

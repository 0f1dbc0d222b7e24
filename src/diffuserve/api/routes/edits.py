"""``POST /v1/images/edits`` and ``POST /v1/images/variations``: images in, images out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from diffuserve.api.auth import Client
from diffuserve.api.deps import ServerParts, authenticate
from diffuserve.api.imaging import AdmitFirst, answer
from diffuserve.api.remote import fetch_image_url
from diffuserve.protocol.common import load_json
from diffuserve.protocol.edits import (
    Form,
    PendingEdit,
    read_edit_form,
    read_edit_json,
    read_variation_form,
)
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.uploads import Upload
from diffuserve.service.planning import GenerationPlan

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


# Bodies and answers are published by diffuserve.api.openapi, from the protocol's tables.
@router.post("/v1/images/edits")
async def edit_image(
    request: Request, client: Annotated[Client, Depends(authenticate)]
) -> Response:
    """Edit images (OpenAI's ``images.edit``): inpainting where the mask is clear, image
    to image without one; multipart, or JSON with data URLs."""

    async def planner(server: ServerParts, label: Callable[[str | None], None]
                      ) -> GenerationPlan | AdmitFirst:
        default = server.service.catalog.request_default()
        if request.headers.get("content-type", "").startswith("application/json"):
            payload = load_json(await request.body())
            label(payload.get("model") if isinstance(payload, dict) else None)
            pending = read_edit_json(payload, default,
                                     remote_allowed=server.allow_remote_image_urls)
        else:
            form = await read_form(request)
            label(_text(form, "model"))
            pending = read_edit_form(form, default)
        if pending.remote:
            # Fetched only for a request that is valid and admitted, and no more of
            # them than the images the served model may take.
            await server.service.check_edit(pending)
            return AdmitFirst(pending.request, lambda: _fetched_then_planned(server, pending))
        return server.service.plan_edit(await server.service.decode_edit(pending))

    return await answer(request, client, planner)


async def _fetched_then_planned(server: ServerParts, pending: PendingEdit) -> GenerationPlan:
    fetched = {image.url: await fetch_image_url(image.url, image.param,
                                                max_bytes=pending.uploads.max_bytes)
               for image in pending.remote}
    return server.service.plan_edit(
        await server.service.decode_edit(pending.with_fetched(fetched)))


@router.post("/v1/images/variations")
async def create_variation(
    request: Request, client: Annotated[Client, Depends(authenticate)]
) -> Response:
    """Variations of an image (OpenAI's ``images.create_variation``)."""

    async def planner(server: ServerParts, label: Callable[[str | None], None]
                      ) -> GenerationPlan:
        form = await read_form(request)
        label(_text(form, "model"))
        pending = read_variation_form(form, server.service.catalog.request_default())
        return server.service.plan_variation(await server.service.decode_variation(pending))

    return await answer(request, client, planner)


def _text(form: Form, name: str) -> str | None:
    values = form.get(name, ())
    return values[0] if values and isinstance(values[0], str) else None

"""The published schema: the real limits of each field and the real error answers.

FastAPI's generated schema would list 422 responses (never sent: every validation error
is OpenAI's 400) and no constraints (the per-model rules run after parsing). This module
states what the server actually enforces: the error answers here, the request bodies
from :mod:`diffuserve.api.request_bodies` (built from the protocol's tables, in place of
whatever the routes declare). It serves ``/openapi.json`` and ``/docs`` (Swagger UI from
this server's own files, :mod:`diffuserve.api.swagger`) behind the API keys, or not at
all with ``--no-api-docs``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from diffuserve import __version__
from diffuserve.api import swagger
from diffuserve.api.auth import Client
from diffuserve.api.deps import ServerParts, authenticate
from diffuserve.api.request_bodies import (
    check_form_body,
    components,
    edit_form_body,
    edit_json_body,
    form_encoding,
    generation_body,
    variation_form_body,
)
from diffuserve.api.routes.playground import answer_file
from diffuserve.protocol.provenance import ContentProvenanceCheck
from diffuserve.protocol.rules import DEFAULT_MODEL_NAME

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]},
        },
    }},
}

#: Why each status is sent; every one carries the envelope above.
ERROR_STATUSES = {
    "400": "The request is invalid (OpenAI's message, param and code), or its Range header",
    "401": "No API key, or a wrong one",
    "403": "The image link was not signed here, or the key may not load or unload models "
           "(that takes role=admin)",
    "404": "Unknown model, route, or an expired image link",
    "405": "The route does not take this method",
    "408": "The deadline passed while the images were drawn",
    "413": "The body is larger than --max-body-bytes (--max-upload-bytes for uploads)",
    "416": "A Range beyond the image's size (Content-Range: bytes */SIZE)",
    "429": "A per-key limit, a full queue, or a deadline passed in the queue (Retry-After)",
    "431": "Request headers larger than --max-header-bytes or too many fields",
    "500": "The pipeline failed (details only in the server's log)",
    "503": "Models still loading, a model that could not be loaded, or the server is "
           "shutting down (Retry-After)",
}


#: The error statuses each route can answer (besides 431 for oversized headers, which
#: the HTTP server answers before any route runs).
STATUSES_BY_PATH = {
    "/v1/images/generations": ("400", "401", "404", "408", "413", "429", "500", "503"),
    "/v1/images/edits": ("400", "401", "404", "408", "413", "429", "500", "503"),
    "/v1/images/variations": ("400", "401", "404", "408", "413", "429", "500", "503"),
    "/v1/images/files/{name}": ("400", "403", "404", "416"),
    "/v1/models": ("401",),
    "/v1/models/{model_id}": ("401", "404"),
    "/v1/content_provenance_checks": ("400", "401", "413", "429"),
    "/v1/models/{model_id}/load": ("400", "401", "403", "404", "503"),
    "/v1/models/{model_id}/unload": ("400", "401", "403", "404"),
    "/ready": ("503",),
}


#: The answers of the image routes, as each route sends them.
_IMAGES = {"application/json": {"schema": {"$ref": "#/components/schemas/ImagesResponse"}}}
_EVENTS = {"text/event-stream": {"schema": {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}}}
IMAGE_ANSWERS = {
    "/v1/images/generations": {
        "description": "The images; with stream=true, Server-Sent Events "
                       "(image_generation.partial_image, image_generation.completed)",
        "content": {**_IMAGES, **_EVENTS}},
    "/v1/images/edits": {
        "description": "The images; with stream=true, Server-Sent Events "
                       "(image_edit.partial_image, image_edit.completed)",
        "content": {**_IMAGES, **_EVENTS}},
    "/v1/images/variations": {"description": "The images", "content": _IMAGES},
    "/v1/content_provenance_checks": {
        "description": "The image's C2PA manifest (validated) and this server's watermark",
        "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/ContentProvenanceCheck"}}}},
}


def request_bodies(app: FastAPI) -> dict[str, dict[str, Any]]:
    """Each route's body, as this server reads it (``requestBody.content``): built from
    the protocol's tables, never from the routes' own declarations."""
    parts: ServerParts | None = getattr(app.state, "parts", None)
    default = DEFAULT_MODEL_NAME if parts is None else parts.service.catalog.request_default()
    remote = parts is not None and parts.allow_remote_image_urls
    edit_form, variation_form = edit_form_body(default), variation_form_body(default)
    return {
        "/v1/images/generations": {"application/json": {"schema": generation_body(default)}},
        "/v1/images/edits": {
            "multipart/form-data": {"schema": edit_form,
                                    "encoding": form_encoding(edit_form["properties"])},
            "application/json": {"schema": edit_json_body(default, remote_urls=remote)},
        },
        "/v1/images/variations": {
            "multipart/form-data": {"schema": variation_form,
                                    "encoding": form_encoding(variation_form["properties"])},
        },
        "/v1/content_provenance_checks": {
            "multipart/form-data": {"schema": check_form_body(), "encoding": {
                "file": form_encoding(["image"])["image"]}},
        },
    }


def build_schema(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=__version__, summary=app.summary,
                         routes=app.routes)
    components_ = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components_.pop(unused, None)
    components_["Error"] = ERROR_SCHEMA
    components_.update(components())
    check = ContentProvenanceCheck.model_json_schema(
        ref_template="#/components/schemas/{model}")
    components_.update(check.pop("$defs", {}))
    components_["ContentProvenanceCheck"] = check
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    bodies = request_bodies(app)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in STATUSES_BY_PATH.get(path, ()):
                responses.setdefault(status, {})
                responses[status]["description"] = ERROR_STATUSES[status]
                if path != "/ready":  # /ready answers with its own status object
                    responses[status]["content"] = error_ref
            if path in bodies:
                operation["requestBody"] = {"required": True, "content": bodies[path]}
                responses["200"] = IMAGE_ANSWERS[path]
    return schema


def install_docs(app: FastAPI, enabled: bool) -> None:
    """``/openapi.json`` and ``/docs``, behind the keys; nothing when not ``enabled``."""
    cached: dict[str, Any] = {}

    def schema() -> dict[str, Any]:
        if not cached:
            cached.update(build_schema(app))
        return cached

    app.openapi = schema  # type: ignore[method-assign]
    if not enabled:
        return

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json(client: Annotated[Client, Depends(authenticate)]) -> JSONResponse:
        return JSONResponse(schema())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request, client: Annotated[Client, Depends(authenticate)]
                   ) -> Response:
        return answer_file(request, swagger.PAGE_ASSET)

    app.include_router(swagger.assets_router(swagger.load_assets()))

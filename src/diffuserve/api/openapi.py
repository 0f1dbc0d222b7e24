"""The published schema: the real limits of each field and the real error answers.

FastAPI's generated schema would list 422 responses (never sent: every validation error
is OpenAI's 400) and no constraints (the per-model rules run after parsing). This module
states what the server actually enforces, and serves ``/openapi.json`` and ``/docs``
behind the API keys (or not at all, with ``--no-api-docs``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from diffuserve import __version__
from diffuserve.api.auth import Client
from diffuserve.api.deps import authenticate
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.image_options import (
    BACKGROUNDS,
    COMPLEXITIES,
    MAX_PARTIAL_IMAGES,
    MAX_SAFETY_IDENTIFIER_LENGTH,
    MODERATION_LEVELS,
    OUTPUT_FORMATS,
    UNSUPPORTED_FORMATS,
)
from diffuserve.protocol.rules import (
    DALLE_SIZES,
    GENERIC,
    GPT_IMAGE_SIZES,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    MAX_USER_LENGTH,
    RESPONSE_FORMATS,
    RULES_BY_NAME,
    STYLES,
)

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
    "400": "The request is invalid (OpenAI's message, param and code)",
    "401": "No API key, or a wrong one",
    "403": "The image link was not signed here",
    "404": "Unknown model, route, or an expired image link",
    "405": "The route does not take this method",
    "408": "The deadline passed while the images were drawn",
    "413": "The body is larger than --max-body-bytes (--max-upload-bytes for uploads)",
    "429": "A per-key limit, a full queue, or a deadline passed in the queue (Retry-After)",
    "431": "Request headers larger than --max-header-bytes or too many fields",
    "500": "The pipeline failed (details only in the server's log)",
    "503": "Models still loading, or the server is shutting down (Retry-After)",
}


#: The error statuses each route can answer (besides 431 for oversized headers, which
#: the HTTP server answers before any route runs).
STATUSES_BY_PATH = {
    "/v1/images/generations": ("400", "401", "404", "408", "413", "429", "500", "503"),
    "/v1/images/edits": ("400", "401", "404", "408", "413", "429", "500", "503"),
    "/v1/images/variations": ("400", "401", "404", "408", "413", "429", "500", "503"),
    "/v1/images/files/{name}": ("400", "403", "404"),
    "/v1/models": ("401",),
    "/v1/models/{model_id}": ("401", "404"),
    "/ready": ("503",),
}


def generation_request_schema() -> dict[str, Any]:
    """The body's schema with the widest bounds any model name accepts; each name's own
    (smaller) rules are in the description."""
    schema = ImageGenerationRequest.model_json_schema()
    longest = max(rules.max_prompt_length for rules in (*RULES_BY_NAME.values(), GENERIC))
    most = max(rules.max_n for rules in (*RULES_BY_NAME.values(), GENERIC))
    qualities = sorted({q for rules in (*RULES_BY_NAME.values(), GENERIC)
                        for q in rules.qualities})
    sizes = [*dict.fromkeys((*DALLE_SIZES, *GPT_IMAGE_SIZES))]
    bounds: dict[str, dict[str, Any]] = {
        "prompt": {"type": "string", "minLength": 1, "maxLength": longest},
        "model": {"type": ["string", "null"]},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": most},
        # gpt-image-2 and later take any WxH within limits (see the description).
        "size": {"anyOf": [{"enum": [*sizes, None]},
                           {"type": "string", "pattern": r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$"}]},
        "quality": {"enum": [*qualities, None]},
        "style": {"enum": [*STYLES, None]},
        "response_format": {"enum": [*RESPONSE_FORMATS, None]},
        "user": {"type": ["string", "null"], "maxLength": MAX_USER_LENGTH},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED},
        "num_inference_steps": {"type": ["integer", "null"], "minimum": 1,
                                "maximum": MAX_STEPS},
        "guidance_scale": {"type": ["number", "null"], "minimum": 0,
                           "maximum": MAX_GUIDANCE},
        "negative_prompt": {"type": ["string", "null"], "maxLength": longest},
        "background": {"enum": [*BACKGROUNDS, None]},
        "moderation": {"enum": [*MODERATION_LEVELS, None]},
        "output_format": {"enum": [*OUTPUT_FORMATS, *UNSUPPORTED_FORMATS, None]},
        "output_compression": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
        "partial_images": {"type": ["integer", "null"], "minimum": 0,
                           "maximum": MAX_PARTIAL_IMAGES},
        "stream": {"type": ["boolean", "null"]},
        "complexity": {"enum": [*COMPLEXITIES, None]},
        "safety_identifier": {"type": ["string", "null"],
                              "maxLength": MAX_SAFETY_IDENTIFIER_LENGTH},
    }
    for name, constraint in bounds.items():
        field = schema["properties"][name]
        field.pop("anyOf", None)
        field.pop("default", None)
        field.update(constraint)
    per_name = "; ".join(
        f"{name}: prompt ≤ {rules.max_prompt_length}, n ≤ {rules.max_n}, size "
        f"{'|'.join(rules.sizes)}, quality {'|'.join(rules.qualities)}, response_format "
        f"{'|'.join(rules.response_formats)}"
        for name, rules in (*RULES_BY_NAME.items(), ("any other name", GENERIC)))
    schema["description"] = (
        "OpenAI's images.generate body. Each requested model name narrows these bounds as "
        f"OpenAI does — {per_name}. seed, num_inference_steps, guidance_scale and "
        "negative_prompt are diffuserve extensions; seed + n − 1 must stay ≤ 2³²−1.")
    return schema


def build_schema(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=__version__, summary=app.summary,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components["Error"] = ERROR_SCHEMA
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in STATUSES_BY_PATH.get(path, ()):
                responses.setdefault(status, {})
                responses[status]["description"] = ERROR_STATUSES[status]
                if path != "/ready":  # /ready answers with its own status object
                    responses[status]["content"] = error_ref
            if path == "/v1/images/generations":
                operation["requestBody"]["content"]["application/json"]["schema"] = (
                    generation_request_schema())
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
    async def docs(client: Annotated[Client, Depends(authenticate)]) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="diffuserve")

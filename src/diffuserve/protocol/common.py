"""Response models and the translation of body-shape errors into OpenAI's words."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from diffuserve.protocol.errors import InvalidRequestError

JSON_PARSE_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you "
    "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
    "but what was sent was not valid JSON.)"
)


class ImageObject(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class TokenDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class Usage(BaseModel):
    """Tokens in and out, as the GPT-image models report them."""

    input_tokens: int
    input_tokens_details: TokenDetails
    output_tokens: int
    output_tokens_details: TokenDetails
    total_tokens: int


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageObject]
    # GPT-image names only: the resolved options, never `auto`.
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    usage: Usage | None = None
    #: The effective safety identifier: ``safety_identifier``, else the deprecated ``user``.
    safety_identifier: str | None = None


class ModelObject(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str
    #: OpenAI announces retirements here; nothing served here is scheduled to go.
    shutdown_date: str | None = None
    #: The served model that draws for this name (its own name for a model; the model an
    #: alias or an OpenAI name points at), as vLLM's model cards name it. Not OpenAI's.
    root: str | None = None
    #: The state of the weights that draw for this name (a derived model's are its
    #: base's), as the engine reports it. Not OpenAI's.
    loaded: bool | None = None
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    weight_bytes: int | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelObject]


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
}


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


#: The first part of a FastAPI error location: where the value was, not its name.
_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _field_path(err: dict[str, Any]) -> list[str]:
    loc = [str(part) for part in err.get("loc", ())]
    return loc[1:] if loc and loc[0] in _LOCATIONS else loc


def translate_validation_errors(errors: Sequence[dict[str, Any]]) -> InvalidRequestError:
    """Turn pydantic/FastAPI validation errors into OpenAI's first-error message.

    ``loc`` from FastAPI starts with where the value was (``"body"``, ``"query"``…);
    the rest names the field.
    """
    if not errors:
        return InvalidRequestError("Invalid request body.")
    # Report a missing required field first, as OpenAI does, then the rest in order.
    ordered = sorted(errors, key=lambda err: err.get("type") != "missing")
    err = ordered[0]
    kind = err.get("type", "")
    loc = _field_path(err)
    param = ".".join(loc) or None
    if kind == "json_invalid":
        return InvalidRequestError(JSON_PARSE_MESSAGE)
    if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        return InvalidRequestError(
            "Invalid type for the request body: expected an object, but got "
            f"{_json_type_name(err.get('input'))} instead.",
            code="invalid_type",
        )
    if kind == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if kind == "extra_forbidden":
        return InvalidRequestError(
            f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter"
        )
    if kind == "string_too_long":
        limit = (err.get("ctx") or {}).get("max_length")
        return InvalidRequestError(
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{limit}, but got a string with length {len(str(err.get('input', '')))} "
            "instead.", param=param, code="string_above_max_length")
    # Union types report one error per branch; the message names the first branch.
    expected = next(
        (_TYPE_NAMES[e["type"]] for e in ordered if e.get("type") in _TYPE_NAMES
         and _field_path(e)[:1] == loc[:1]),
        "a valid value",
    )
    return InvalidRequestError(
        f"Invalid type for '{loc[0] if loc else param}': expected {expected}, but got "
        f"{_json_type_name(err.get('input'))} instead.",
        param=loc[0] if loc else param,
        code="invalid_type",
    )


def parse_json_body(raw: bytes, model: type[BaseModel]) -> Any:
    """Parse a request body as JSON whatever its ``Content-Type`` (as OpenAI does), then
    validate it as ``model``; every failure is OpenAI's 400."""
    payload = load_json(raw)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise translate_validation_errors([dict(err) for err in exc.errors()]) from None


def load_json(raw: bytes) -> Any:
    """A request body as JSON, or OpenAI's 400 for one that is not."""
    try:
        payload = json.loads(raw)
        # Refuse two bodies that would otherwise become a 500 further on: nesting
        # deep enough to raise RecursionError, and lone surrogate escapes ("\ud800"),
        # which Python accepts but no later UTF-8 encode (hashing, response) can write.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # JSONDecodeError and Unicode errors included
        raise InvalidRequestError(JSON_PARSE_MESSAGE) from None
    return payload

"""The bodies of ``POST /v1/images/edits`` and ``/v1/images/variations``.

Both arrive as multipart forms (every value a string, files under ``image``/``image[]``
and ``mask``/``mask[]``, as the SDKs send them); edits also as JSON with data URLs. The
fields they share with generations are checked by the same per-name rules; what is
particular to uploads is checked here: how many images, which formats, how large, a mask
of the same size with transparency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import ValidationError

from diffuserve.protocol.common import translate_validation_errors
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.rules import ValidatedRequest, rules_for
from diffuserve.protocol.uploads import (
    DecodedImage,
    Upload,
    decode_image,
    flatten,
    mask_from_alpha,
    redraw_where_clear,
    upload_from_data_url,
)

MB = 1 << 20
INPUT_FIDELITIES = ("low", "high")
#: Fields of the edits form and their types ("file" fields are handled apart).
EDIT_FIELDS: dict[str, type] = {
    "prompt": str, "model": str, "n": int, "size": str, "quality": str,
    "response_format": str, "user": str, "background": str, "output_format": str,
    "output_compression": int, "input_fidelity": str, "partial_images": int, "stream": bool,
    "safety_identifier": str,
    # diffuserve's extensions, as on generations.
    "seed": int, "num_inference_steps": int, "guidance_scale": float, "negative_prompt": str,
}
VARIATION_FIELDS: dict[str, type] = {
    "model": str, "n": int, "size": str, "response_format": str, "user": str,
    "seed": int, "num_inference_steps": int, "guidance_scale": float,
}
#: Generation-rule checks need a prompt; a variation has none.
_NO_PROMPT = "variation"


@dataclass(frozen=True)
class UploadRules:
    """What one requested name accepts as uploads, as OpenAI enforces it."""

    max_images: int
    formats: tuple[str, ...]
    max_bytes: int
    square: bool
    input_fidelity: bool


DALL_E_2_UPLOADS = UploadRules(max_images=1, formats=("png",), max_bytes=4 * MB, square=True,
                               input_fidelity=False)
GPT_IMAGE_UPLOADS = UploadRules(max_images=16, formats=("png", "webp", "jpeg"),
                                max_bytes=50 * MB, square=False, input_fidelity=True)
MASK_MAX_BYTES = 4 * MB


def upload_rules_for(model: str) -> UploadRules:
    return DALL_E_2_UPLOADS if model == "dall-e-2" else GPT_IMAGE_UPLOADS


@dataclass(frozen=True)
class EditRequest:
    """A valid edit: the shared fields, the images (RGB) and the area to redraw."""

    request: ValidatedRequest
    images: tuple[Any, ...]  # PIL images, RGB
    mask: Any | None  # PIL ``L``, white = redraw; None: the whole image
    input_fidelity: str
    #: The first image's size, for ``size=auto``.
    input_size: tuple[int, int]


@dataclass(frozen=True)
class VariationRequest:
    request: ValidatedRequest
    image: Any  # PIL, RGB


Form = Mapping[str, Sequence["str | Upload"]]


def _coerce(name: str, values: Sequence[str | Upload], kind: type) -> Any:
    if len(values) != 1:
        raise InvalidRequestError(f"Invalid '{name}': expected one value, but got "
                                  f"{len(values)}.", param=name, code="invalid_type")
    value = values[0]
    if isinstance(value, Upload):
        raise InvalidRequestError(f"Invalid type for '{name}': expected a string, but got a "
                                  "file instead.", param=name, code="invalid_type")
    if kind is int:
        text = value.strip()
        if not text.lstrip("-").isdigit() or not text.isascii():
            raise InvalidRequestError(
                f"Invalid type for '{name}': expected an integer, but got a string instead.",
                param=name, code="invalid_type")
        return int(text)
    if kind is float:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number != number or number in (float("inf"), float("-inf")):
            raise InvalidRequestError(
                f"Invalid type for '{name}': expected a number, but got a string instead.",
                param=name, code="invalid_type")
        return number
    if kind is bool:
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise InvalidRequestError(
                f"Invalid type for '{name}': expected a boolean, but got a string instead.",
                param=name, code="invalid_type")
        return lowered == "true"
    return value


def _files(form: Form, name: str) -> list[tuple[str, Upload]]:
    """The files under ``name`` and ``name[]``, each with the param that names it."""
    plain, listed = list(form.get(name, ())), list(form.get(f"{name}[]", ()))
    found: list[tuple[str, Upload]] = []
    for label, values in ((name, plain), (f"{name}[]", listed)):
        for index, value in enumerate(values):
            param = f"{name}[{index}]" if label.endswith("[]") or len(values) > 1 else name
            if not isinstance(value, Upload):
                raise InvalidRequestError(
                    f"Invalid type for '{param}': expected a file, but got a string instead.",
                    param=param, code="invalid_type")
            found.append((param, value))
    return found


def _fields(form: Form, allowed: Mapping[str, type], files: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, raw in form.items():
        if name in files or name.removesuffix("[]") in files:
            continue
        if name not in allowed:
            raise InvalidRequestError(f"Unknown parameter: '{name}'.", param=name,
                                      code="unknown_parameter")
        values[name] = _coerce(name, raw, allowed[name])
    return values


def _validated(values: Mapping[str, Any], model_default: str) -> ValidatedRequest:
    model = values.get("model") or model_default
    shared = {key: value for key, value in values.items() if key != "input_fidelity"}
    try:
        body = ImageGenerationRequest.model_validate({**shared, "model": model})
    except ValidationError as exc:
        raise translate_validation_errors([dict(err) for err in exc.errors()]) from None
    return rules_for(model).validate(body, model)


def parse_edit_form(form: Form, model_default: str) -> EditRequest:
    """An edit from a multipart form (strings and files)."""
    values = _fields(form, EDIT_FIELDS, ("image", "mask", "markup"))
    if "prompt" not in values:
        raise InvalidRequestError("Missing required parameter: 'prompt'.", param="prompt",
                                  code="missing_required_parameter")
    images = _files(form, "image")
    masks = _files(form, "mask")
    markups = _files(form, "markup")
    return _edit(values, images, masks, model_default, markups)


def remote_image_urls(payload: Any) -> list[str]:
    """The http(s) ``image_url``s of a JSON edit, for a caller allowed to fetch them."""
    if not isinstance(payload, dict):
        return []
    entries = payload.get("images")
    entries = [*(entries if isinstance(entries, list) else []), payload.get("mask")]
    return [entry["image_url"] for entry in entries if isinstance(entry, dict)
            and isinstance(entry.get("image_url"), str)
            and entry["image_url"].startswith(("http://", "https://"))]


def parse_edit_json(payload: Any, model_default: str,
                    fetched: Mapping[str, Upload] | None = None) -> EditRequest:
    """An edit from the JSON form: ``images: [{image_url}]``, ``mask: {image_url}``; remote
    URLs only as ``fetched`` (URL → its upload) by a caller allowed to fetch them."""
    fetched = fetched or {}
    if not isinstance(payload, dict):
        raise InvalidRequestError("Invalid type for the request body: expected an object.",
                                  code="invalid_type")
    allowed = {**EDIT_FIELDS, "moderation": str}
    values: dict[str, Any] = {}
    for name, value in payload.items():
        if name in ("images", "mask"):
            continue
        if name not in allowed:
            raise InvalidRequestError(f"Unknown parameter: '{name}'.", param=name,
                                      code="unknown_parameter")
        if value is not None and not _json_type_ok(value, allowed[name]):
            raise InvalidRequestError(
                f"Invalid type for '{name}': expected {_type_name(allowed[name])}.",
                param=name, code="invalid_type")
        values[name] = value
    if "prompt" not in values:
        raise InvalidRequestError("Missing required parameter: 'prompt'.", param="prompt",
                                  code="missing_required_parameter")
    entries = payload.get("images")
    if not isinstance(entries, list) or not entries:
        raise InvalidRequestError("Missing required parameter: 'images'.", param="images",
                                  code="missing_required_parameter")
    images = [(f"images[{index}]", _json_upload(entry, f"images[{index}]", fetched))
              for index, entry in enumerate(entries)]
    mask = payload.get("mask")
    masks = [("mask", _json_upload(mask, "mask", fetched))] if mask is not None else []
    return _edit(values, images, masks, model_default)


def _json_type_ok(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind: type) -> str:
    return {int: "an integer", bool: "a boolean", float: "a number"}.get(kind, "a string")


def _json_upload(entry: Any, param: str, fetched: Mapping[str, Upload]) -> Upload:
    if isinstance(entry, dict) and isinstance(entry.get("image_url"), str):
        if entry["image_url"] in fetched:
            return fetched[entry["image_url"]]
        return upload_from_data_url(entry["image_url"], param)
    if isinstance(entry, dict) and "file_id" in entry:
        raise InvalidRequestError(f"Invalid '{param}': this server keeps no files; send "
                                  "image_url with a data URL.", param=param,
                                  code="invalid_value")
    raise InvalidRequestError(f"Invalid '{param}': expected an object with image_url.",
                              param=param, code="invalid_type")


def _edit(values: dict[str, Any], images: list[tuple[str, Upload]],
          masks: list[tuple[str, Upload]], model_default: str,
          markups: list[tuple[str, Upload]] | None = None) -> EditRequest:
    model = values.get("model") or model_default
    if model == "dall-e-3":
        raise InvalidRequestError("The model dall-e-3 does not support image edits.",
                                  param="model", code="invalid_value")
    uploads = upload_rules_for(model)
    fidelity = values.get("input_fidelity")
    if fidelity is not None and not uploads.input_fidelity:
        raise InvalidRequestError(f"Unknown parameter: 'input_fidelity'. It is not supported "
                                  f"for {model}.", param="input_fidelity",
                                  code="unknown_parameter")
    if fidelity is not None and fidelity not in INPUT_FIDELITIES:
        raise InvalidRequestError(f"{fidelity!r} is not one of {list(INPUT_FIDELITIES)!r} - "
                                  "'input_fidelity'", param="input_fidelity",
                                  code="invalid_value")
    request = _validated(values, model_default)
    if not images:
        raise InvalidRequestError("Missing required parameter: 'image'.", param="image",
                                  code="missing_required_parameter")
    if len(images) > uploads.max_images:
        raise InvalidRequestError(
            f"Invalid 'image': {len(images)} images; {model} takes at most "
            f"{uploads.max_images}.", param="image", code="too_many_images")
    decoded = [_checked(upload, param, uploads) for param, upload in images]
    if len(masks) > 1:
        raise InvalidRequestError("Invalid 'mask': only one mask is accepted.", param="mask",
                                  code="invalid_value")
    first = decoded[0].image
    if markups:
        first = _marked_up(first, markups, masks, model)
        decoded[0] = DecodedImage(first, decoded[0].format, decoded[0].size_bytes)
    if masks:
        param, upload = masks[0]
        mask_image = decode_image(upload, param, formats=("png",), max_bytes=MASK_MAX_BYTES)
        mask = mask_from_alpha(mask_image, first, param)
    elif decoded[0].has_transparency:
        mask = redraw_where_clear(first)  # dall-e-2's rule: transparency is the mask
    else:
        mask = None
    return EditRequest(request=request, images=tuple(flatten(d.image) for d in decoded),
                       mask=mask, input_fidelity=fidelity or "low", input_size=first.size)


def _marked_up(image: Any, markups: list[tuple[str, Upload]],
               masks: list[tuple[str, Upload]], model: str) -> Any:
    """``markup``: a transparent PNG drawn over the first image to guide the edit (an
    image-to-image edit of the two together); not with a mask, one at most."""
    param, upload = markups[0]
    if model in ("dall-e-2", "dall-e-3"):
        raise InvalidRequestError(f"Unknown parameter: 'markup'. It is not supported for "
                                  f"{model}.", param="markup", code="unknown_parameter")
    if masks:
        raise InvalidRequestError("'markup' cannot be combined with 'mask'.", param="markup",
                                  code="invalid_value")
    if len(markups) > 1:
        raise InvalidRequestError("Invalid 'markup': only one is accepted.", param="markup",
                                  code="invalid_value")
    markup = decode_image(upload, param, formats=("png",), max_bytes=MASK_MAX_BYTES)
    if markup.image.size != image.size:
        raise InvalidRequestError(
            f"Invalid 'markup': it is {markup.image.width}x{markup.image.height} but the "
            f"image is {image.width}x{image.height}; they must be the same size.",
            param="markup", code="invalid_image_size")
    if not markup.has_transparency:
        raise InvalidRequestError("Invalid 'markup': it must have transparent pixels, where "
                                  "the image shows through.", param="markup",
                                  code="invalid_value")
    base = image.convert("RGBA")
    return Image.alpha_composite(base, markup.image).convert(image.mode)


def _checked(upload: Upload, param: str, uploads: UploadRules) -> DecodedImage:
    decoded = decode_image(upload, param, formats=uploads.formats, max_bytes=uploads.max_bytes)
    if uploads.square and decoded.image.width != decoded.image.height:
        raise InvalidRequestError(
            f"Invalid '{param}': the image must be square, but it is "
            f"{decoded.image.width}x{decoded.image.height}.", param=param,
            code="invalid_image_size")
    return decoded


def parse_variation_form(form: Form, model_default: str) -> VariationRequest:
    """A variation from a multipart form: one image, no prompt."""
    values = _fields(form, VARIATION_FIELDS, ("image",))
    images = _files(form, "image")
    if not images:
        raise InvalidRequestError("Missing required parameter: 'image'.", param="image",
                                  code="missing_required_parameter")
    if len(images) > 1:
        raise InvalidRequestError("Invalid 'image': a variation takes one image.",
                                  param="image", code="too_many_images")
    model = values.get("model") or model_default
    request = _validated({**values, "prompt": _NO_PROMPT}, model_default)
    param, upload = images[0]
    decoded = _checked(upload, param, upload_rules_for(model))
    return VariationRequest(request=request, image=flatten(decoded.image))

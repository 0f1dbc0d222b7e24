"""The bodies of ``POST /v1/images/edits`` and ``/v1/images/variations``.

Both arrive as multipart forms (every value a string, files under ``image``/``image[]``
and ``mask``/``mask[]``, as the SDKs send them); edits also as JSON with data URLs. The
fields they share with generations are checked by the same per-name rules; what is
particular to uploads is checked here: how many images, which formats, how large, a mask
of the same size with transparency.

Reading a body (:func:`read_edit_form`, :func:`read_edit_json`,
:func:`read_variation_form`) checks what needs no model name: the fields' names and
types, the files' parts. Once the service has resolved the name (an omitted ``model``
is its default), :func:`check_edit` and :func:`check_variation` apply that name's rules
(one row of :data:`~diffuserve.protocol.rules.RULES_BY_NAME`): the fields' values, the
number of uploads and their headers (bytes, format, declared pixels), decoding nothing;
:func:`decode_edit` and :func:`decode_variation` then decode the pixels (CPU work, for a
worker thread) and check what only pixels show (a mask's transparency, its size against
the upright image).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image
from pydantic import ValidationError

from diffuserve.protocol.adapters import lora_from_form
from diffuserve.protocol.common import translate_validation_errors
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.rules import GPT_IMAGE_UPLOADS as GPT_IMAGE_UPLOADS  # re-exported
from diffuserve.protocol.rules import UploadRules, ValidatedRequest, rules_for
from diffuserve.protocol.uploads import (
    DecodedImage,
    ProbedImage,
    Upload,
    check_request_pixels,
    decode_probed,
    flatten,
    mask_from_alpha,
    probe_image,
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
    "safety_identifier": str, "complexity": str,
    # Answered as on generations: GIF and SVG fields are refused with a targeted 400.
    "frame_count": int, "frame_duration_ms": int, "svg": dict,
    # diffuserve's extensions, as on generations ("lora": an object or a list of them,
    # in a form as JSON text or bracketed parts: protocol/adapters.py).
    "seed": int, "num_inference_steps": int, "guidance_scale": float, "negative_prompt": str,
    "lora": object,
}
VARIATION_FIELDS: dict[str, type] = {
    "model": str, "n": int, "size": str, "response_format": str, "user": str,
    "seed": int, "num_inference_steps": int, "guidance_scale": float, "lora": object,
}
#: Generation-rule checks need a prompt; a variation has none.
_NO_PROMPT = "variation"
#: An object field of a multipart form, spelt as the SDKs spell it: ``svg[model]``,
#: ``svg[reasoning][effort]`` (openai-python's "brackets" format).
_BRACKETED = re.compile(r"^([a-z_]+)((?:\[[^\[\]]+\])+)$")
#: What one image of the JSON form looks like, for the messages that refuse another.
JSON_IMAGE_SHAPE = '{"image_url": "data:image/png;base64,..."} or the data URL itself'


MASK_MAX_BYTES = 4 * MB


def too_many_images(model: str, limit: int, given: int) -> InvalidRequestError:
    """The refusal of an edit with more images than the served ``model`` takes in one
    edit (the image and its references), saying its limit."""
    if limit == 1:
        message = (f"The model {model!r} edits one image at a time; {given} were sent. "
                   "Send one image.")
    else:
        message = (f"The model {model!r} takes at most {limit} images in one edit; "
                   f"{given} were sent. Send at most {limit}.")
    return InvalidRequestError(message, param="image", code="too_many_images")


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


@dataclass(frozen=True)
class RemoteImage:
    """An http(s) ``image_url`` of the JSON form, to be fetched once the request is
    admitted (only where the operator allows remote URLs)."""

    param: str
    url: str


ImageSource = ProbedImage | RemoteImage


@dataclass(frozen=True)
class PendingEdit:
    """An edit whose fields, number of uploads and upload headers are checked: nothing
    is decoded yet, and remote images are not fetched yet."""

    request: ValidatedRequest
    uploads: UploadRules
    images: tuple[ImageSource, ...]
    mask: ImageSource | None
    markup: ProbedImage | None
    input_fidelity: str

    @property
    def remote(self) -> tuple[RemoteImage, ...]:
        """The images still to fetch, mask included."""
        return tuple(source for source in (*self.images, self.mask)
                     if isinstance(source, RemoteImage))

    @property
    def probed(self) -> list[ProbedImage]:
        return [source for source in (*self.images, self.mask, self.markup)
                if isinstance(source, ProbedImage)]

    @property
    def pixels(self) -> int:
        """Pixels the uploads declare: what decoding them will hold."""
        return sum(image.pixels for image in self.probed)

    def with_fetched(self, fetched: Mapping[str, Upload]) -> PendingEdit:
        """The remote images replaced by their fetched bytes (URL → upload), probed and
        checked as uploads are."""
        def image(source: ImageSource) -> ImageSource:
            if not isinstance(source, RemoteImage):
                return source
            return _probed_upload(fetched[source.url], source.param, self.uploads)

        def mask(source: ImageSource | None) -> ImageSource | None:
            if not isinstance(source, RemoteImage):
                return source
            return _probed_mask(fetched[source.url], source.param)

        pending = replace(self, images=tuple(image(source) for source in self.images),
                          mask=mask(self.mask))
        _check_probed(pending)
        return pending


@dataclass(frozen=True)
class PendingVariation:
    """A variation whose fields and image header are checked; not decoded yet."""

    request: ValidatedRequest
    image: ProbedImage

    @property
    def pixels(self) -> int:
        return self.image.pixels


Form = Mapping[str, Sequence["str | Upload"]]
#: A file part (or a JSON image) with the param that names it.
Part = tuple[str, Upload | RemoteImage]


@dataclass(frozen=True)
class EditBody:
    """An edit as read from its body (multipart or JSON): the fields by name, of their
    types; the files by param, not probed yet. :func:`check_edit` applies the rules of
    its model name."""

    fields: Mapping[str, Any]
    images: tuple[Part, ...]
    masks: tuple[Part, ...]
    markups: tuple[tuple[str, Upload], ...] = ()

    @property
    def model(self) -> str | None:
        """The name asked for; None: none (the service's default model)."""
        return _model_field(self.fields)


@dataclass(frozen=True)
class VariationBody:
    """A variation as read from its form: the fields, its one image (not probed yet).
    :func:`check_variation` applies the rules of its model name."""

    fields: Mapping[str, Any]
    image: tuple[str, Upload]

    @property
    def model(self) -> str | None:
        """The name asked for; None: none (the service's default model)."""
        return _model_field(self.fields)


def _model_field(fields: Mapping[str, Any]) -> str | None:
    model = fields.get("model")
    return model if isinstance(model, str) and model else None


#: A request as its route reads it, before the service resolves and plans it.
ImageRequest = ImageGenerationRequest | EditBody | VariationBody


def _coerce(name: str, values: Sequence[str | Upload], kind: type) -> Any:
    if len(values) != 1:
        raise InvalidRequestError(f"Invalid '{name}': expected one value, but got "
                                  f"{len(values)}.", param=name, code="invalid_type")
    value = values[0]
    if isinstance(value, Upload):
        raise InvalidRequestError(f"Invalid type for '{name}': expected a string, but got a "
                                  "file instead.", param=name, code="invalid_type")
    if kind is dict:
        raise InvalidRequestError(
            f"Invalid type for '{name}': expected an object, but got a string instead. "
            f"Send its fields as {name}[field] parts.", param=name, code="invalid_type")
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
    lora: dict[str, list[str]] = {}
    for name, raw in form.items():
        if name in files or name.removesuffix("[]") in files:
            continue
        if "lora" in allowed and (name == "lora" or name.startswith("lora[")):
            lora[name] = [_coerce(name, [value], str) for value in raw]
            continue
        bracketed = _BRACKETED.match(name)
        if bracketed is not None and allowed.get(bracketed.group(1)) is dict:
            field, keys = bracketed.group(1), re.findall(r"\[([^\[\]]+)\]", bracketed.group(2))
            _put(values, field, keys, _coerce(name, raw, str), name)
            continue
        if name not in allowed:
            raise InvalidRequestError(f"Unknown parameter: '{name}'.", param=name,
                                      code="unknown_parameter")
        values[name] = _coerce(name, raw, allowed[name])
    if lora:
        values["lora"] = lora_from_form(lora)
    return values


def _put(values: dict[str, Any], field: str, keys: list[str], value: str, name: str) -> None:
    """``svg[reasoning][effort]=high`` → ``values["svg"]["reasoning"]["effort"] = "high"``."""
    node: Any = values.setdefault(field, {})
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            break
    if not isinstance(node, dict) or isinstance(node.get(keys[-1]), dict):
        raise InvalidRequestError(f"Invalid '{name}': a field is both a value and an object.",
                                  param=field, code="invalid_type")
    node[keys[-1]] = value


def _validated(values: Mapping[str, Any], model: str) -> ValidatedRequest:
    shared = {key: value for key, value in values.items() if key != "input_fidelity"}
    try:
        body = ImageGenerationRequest.model_validate({**shared, "model": model})
    except ValidationError as exc:
        raise translate_validation_errors([dict(err) for err in exc.errors()]) from None
    return rules_for(model).validate(body, model)


def read_edit_form(form: Form) -> EditBody:
    """An edit from a multipart form (strings and files)."""
    values = _fields(form, EDIT_FIELDS, ("image", "mask", "markup"))
    if "prompt" not in values:
        raise InvalidRequestError("Missing required parameter: 'prompt'.", param="prompt",
                                  code="missing_required_parameter")
    images = _files(form, "image")
    masks = _files(form, "mask")
    markups = _files(form, "markup")
    return EditBody(values, tuple(images), tuple(masks), tuple(markups))


def read_edit_json(payload: Any, *, remote_allowed: bool = False) -> EditBody:
    """An edit from the JSON form: ``images: [{image_url}]``, ``mask: {image_url}``, data
    URLs; http(s) URLs only where ``remote_allowed`` (fetched by the service once the
    request is admitted).

    What clients also send and cannot be mistaken is taken too: an image as its bare URL
    (``images: ["data:…"]``, ``mask: "data:…"``) and one image as ``image``."""
    if not isinstance(payload, dict):
        raise InvalidRequestError("Invalid type for the request body: expected an object.",
                                  code="invalid_type")
    allowed = {**EDIT_FIELDS, "moderation": str}
    values: dict[str, Any] = {}
    for name, value in payload.items():
        if name in ("images", "image", "mask"):
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
    images = [(param, _json_upload(entry, param, remote_allowed))
              for param, entry in _json_images(payload)]
    mask = payload.get("mask")
    masks = [("mask", _json_upload(mask, "mask", remote_allowed))] if mask is not None else []
    return EditBody(values, tuple(images), tuple(masks))


def _json_images(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """The image entries of a JSON edit, each with the param that names it."""
    if payload.get("image") is not None and payload.get("images") is not None:
        raise InvalidRequestError("Send the images as 'images' (a list) or one image as "
                                  "'image', not both.", param="image", code="invalid_value")
    if payload.get("image") is not None:
        if isinstance(payload["image"], list):
            raise InvalidRequestError(
                f"Invalid 'image': expected one image, {JSON_IMAGE_SHAPE}; send a list as "
                "'images'.", param="image", code="invalid_type")
        return [("image", payload["image"])]
    entries = payload.get("images")
    if entries is None or entries == []:
        raise InvalidRequestError("Missing required parameter: 'images'.", param="images",
                                  code="missing_required_parameter")
    if not isinstance(entries, list):
        raise InvalidRequestError(
            f"Invalid type for 'images': expected a list of images, each {JSON_IMAGE_SHAPE}.",
            param="images", code="invalid_type")
    return [(f"images[{index}]", entry) for index, entry in enumerate(entries)]


def read_variation_form(form: Form) -> VariationBody:
    """A variation from a multipart form: one image, no prompt."""
    values = _fields(form, VARIATION_FIELDS, ("image",))
    images = _files(form, "image")
    if not images:
        raise InvalidRequestError("Missing required parameter: 'image'.", param="image",
                                  code="missing_required_parameter")
    if len(images) > 1:
        raise InvalidRequestError("Invalid 'image': a variation takes one image.",
                                  param="image", code="too_many_images")
    return VariationBody(values, images[0])


def check_variation(body: VariationBody, model: str) -> PendingVariation:
    """The variation checked by the rules of ``model`` (the name asked for, or the
    default); its image's header read, nothing decoded yet."""
    request = _validated({**body.fields, "prompt": _NO_PROMPT}, model)
    param, upload = body.image
    image = _probed_upload(upload, param, rules_for(model).uploads)
    check_request_pixels([image])
    return PendingVariation(request=request, image=image)


def decode_edit(pending: PendingEdit) -> EditRequest:
    """The pixels of a pending edit (every remote image fetched), and the checks only
    pixels allow. CPU work: run it off the event loop."""
    if pending.remote:
        raise ValueError("the edit's remote images are not fetched yet")
    decoded = [decode_probed(source) for source in pending.images
               if isinstance(source, ProbedImage)]
    first = decoded[0].image
    if pending.markup is not None:
        first = _marked_up(first, decode_probed(pending.markup))
        decoded[0] = DecodedImage(first, decoded[0].format, decoded[0].size_bytes)
    if isinstance(pending.mask, ProbedImage):
        mask = mask_from_alpha(decode_probed(pending.mask), first, pending.mask.param)
    elif decoded[0].has_transparency:
        mask = redraw_where_clear(first)  # dall-e-2's rule: transparency is the mask
    else:
        mask = None
    return EditRequest(request=pending.request, images=tuple(flatten(d.image) for d in decoded),
                       mask=mask, input_fidelity=pending.input_fidelity,
                       input_size=first.size)


def decode_variation(pending: PendingVariation) -> VariationRequest:
    """The pixels of a pending variation. CPU work: run it off the event loop."""
    return VariationRequest(request=pending.request,
                            image=flatten(decode_probed(pending.image).image))


def _json_type_ok(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind: type) -> str:
    return {int: "an integer", bool: "a boolean", float: "a number",
            dict: "an object"}.get(kind, "a string")


def _json_upload(entry: Any, param: str, remote_allowed: bool) -> Upload | RemoteImage:
    url = entry.get("image_url") if isinstance(entry, dict) else entry
    if isinstance(url, str):
        if remote_allowed and url.startswith(("http://", "https://")):
            return RemoteImage(param, url)
        return upload_from_data_url(url, param)
    if isinstance(entry, dict) and "file_id" in entry:
        raise InvalidRequestError(f"Invalid '{param}': this server keeps no files; send "
                                  "image_url with a data URL.", param=param,
                                  code="invalid_value")
    raise InvalidRequestError(f"Invalid '{param}': expected {JSON_IMAGE_SHAPE}.",
                              param=param, code="invalid_type")


def check_edit(body: EditBody, model: str) -> PendingEdit:
    """The edit checked by the rules of ``model`` (the name asked for, or the default):
    every check that needs no pixel (fields, how many uploads, their headers)."""
    values, images, masks = body.fields, body.images, body.masks
    rules = rules_for(model)
    if not rules.edits:
        raise InvalidRequestError(f"The model {model} does not support image edits.",
                                  param="model", code="invalid_value")
    uploads = rules.uploads
    fidelity = values.get("input_fidelity")
    if fidelity is not None and not uploads.input_fidelity:
        raise InvalidRequestError(f"Unknown parameter: 'input_fidelity'. It is not supported "
                                  f"for {model}.", param="input_fidelity",
                                  code="unknown_parameter")
    if fidelity is not None and fidelity not in INPUT_FIDELITIES:
        raise InvalidRequestError(f"{fidelity!r} is not one of {list(INPUT_FIDELITIES)!r} - "
                                  "'input_fidelity'", param="input_fidelity",
                                  code="invalid_value")
    request = _validated(values, model)
    if not images:
        raise InvalidRequestError("Missing required parameter: 'image'.", param="image",
                                  code="missing_required_parameter")
    # Counted before a single header is read: a request is never decoded past its limit.
    if len(images) > uploads.max_images:
        raise InvalidRequestError(
            f"Invalid 'image': {len(images)} images; {model} takes at most "
            f"{uploads.max_images}.", param="image", code="too_many_images")
    if len(masks) > 1:
        raise InvalidRequestError("Invalid 'mask': only one mask is accepted.", param="mask",
                                  code="invalid_value")
    markup = _markup(body.markups, masks, model)
    pending = PendingEdit(
        request=request, uploads=uploads,
        images=tuple(_probed(source, param, uploads) for param, source in images),
        mask=next((_probed_mask(source, param) for param, source in masks), None),
        markup=markup, input_fidelity=fidelity or "low")
    _check_probed(pending)
    return pending


def _check_probed(pending: PendingEdit) -> None:
    """What the headers already show: the request's pixels, and a markup of the first
    image's size (a mask's size is checked against the upright image, once decoded)."""
    check_request_pixels(pending.probed)
    first, markup = pending.images[0], pending.markup
    if markup is not None and isinstance(first, ProbedImage) \
            and (markup.width, markup.height) != (first.width, first.height):
        raise InvalidRequestError(
            f"Invalid 'markup': it is {markup.width}x{markup.height} but the image is "
            f"{first.width}x{first.height}; they must be the same size.",
            param="markup", code="invalid_image_size")


def _markup(markups: Sequence[tuple[str, Upload]],
            masks: Sequence[tuple[str, Upload | RemoteImage]],
            model: str) -> ProbedImage | None:
    """``markup``: a transparent PNG drawn over the first image to guide the edit (an
    image-to-image edit of the two together); not with a mask, one at most."""
    if not markups:
        return None
    param, upload = markups[0]
    if not rules_for(model).markup:
        raise InvalidRequestError(f"Unknown parameter: 'markup'. It is not supported for "
                                  f"{model}.", param="markup", code="unknown_parameter")
    if masks:
        raise InvalidRequestError("'markup' cannot be combined with 'mask'.", param="markup",
                                  code="invalid_value")
    if len(markups) > 1:
        raise InvalidRequestError("Invalid 'markup': only one is accepted.", param="markup",
                                  code="invalid_value")
    return probe_image(upload, param, formats=("png",), max_bytes=MASK_MAX_BYTES)


def _marked_up(image: Any, markup: DecodedImage) -> Any:
    """The markup drawn over the (decoded) first image."""
    if markup.image.size != image.size:  # the same headers, but one was turned by EXIF
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


def _probed(source: Upload | RemoteImage, param: str, uploads: UploadRules) -> ImageSource:
    return source if isinstance(source, RemoteImage) else _probed_upload(source, param,
                                                                         uploads)


def _probed_upload(source: Upload, param: str, uploads: UploadRules) -> ProbedImage:
    probed = probe_image(source, param, formats=uploads.formats, max_bytes=uploads.max_bytes)
    if uploads.square and probed.width != probed.height:
        # Square stays square however EXIF turns it: the header decides.
        raise InvalidRequestError(
            f"Invalid '{param}': the image must be square, but it is "
            f"{probed.width}x{probed.height}.", param=param, code="invalid_image_size")
    return probed


def _probed_mask(source: Upload | RemoteImage, param: str) -> ImageSource:
    if isinstance(source, RemoteImage):
        return source
    return probe_image(source, param, formats=("png",), max_bytes=MASK_MAX_BYTES)

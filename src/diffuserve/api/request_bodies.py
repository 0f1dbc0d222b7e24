"""The published schemas of the request bodies, derived from the protocol's tables.

Every field's bounds come from the per-name rules (:mod:`diffuserve.protocol.rules`), the
GPT-image options (:mod:`diffuserve.protocol.image_options`) and the edit and variation
field tables (:mod:`diffuserve.protocol.edits`), so the schema cannot drift from what the
server accepts. Each body is one object schema:

- ``properties``: every field the route reads, with the widest bounds any name accepts
  (what Swagger UI shows and builds its forms from);
- ``anyOf``: one branch per family of model names with the same rules, narrowing the
  fields to what those names accept (a field a family refuses must be absent, or null
  in JSON); the family of the default model also takes an omitted ``model``;
- ``allOf``: the rules between fields (compression only for jpeg and webp, no
  transparent jpeg, partial images only when streamed; a JSON edit's images as a list
  or one image, not both).

What JSON Schema cannot say (``seed + n - 1`` within 32 bits, the free sizes' aspect
ratio and pixel budget, that a file must hold a real image of the right size, what the
served model itself can draw) and what it could say but only at a size schema-driven
generators give up on (a mask or a markup but not both in the edit form; partial images
only when streamed in the JSON edit, whose images rule doubles its branches) is in the
descriptions, and the fuzz tests (tests/support/fuzzing.py) name each such refusal. The
routes' own declarations play no part: :func:`diffuserve.api.openapi.build_schema`
replaces them with these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from diffuserve.config.adapters import (
    ADAPTER_NAME_PATTERN,
    MAX_ADAPTER_SCALE,
    MAX_ADAPTERS_PER_REQUEST,
    MIN_ADAPTER_SCALE,
)
from diffuserve.protocol.edits import (
    EDIT_FIELDS,
    INPUT_FIDELITIES,
    MASK_MAX_BYTES,
    VARIATION_FIELDS,
)
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.image_options import (
    BACKGROUNDS,
    COMPLEXITIES,
    MAX_PARTIAL_IMAGES,
    MAX_SAFETY_IDENTIFIER_LENGTH,
    MODERATION_LEVELS,
    OUTPUT_FORMATS,
)
from diffuserve.protocol.rules import (
    ANY_SIZE,
    FREE_SIZE,
    GENERIC,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    MAX_USER_LENGTH,
    NO_EDIT_NAMES,
    RULES_BY_NAME,
    STYLES,
    ModelRules,
    SizeLimits,
    UploadRules,
)

Schema = dict[str, Any]

#: One LoRA adapter a request names; which names a model has is not the schema's to say
#: (an adapters folder changes while the server runs): an unknown one is a 400.
LORA_ADAPTER: Schema = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": ADAPTER_NAME_PATTERN,
                 "description": "one of the model's adapters (never a path or a URL)"},
        "scale": {"type": ["number", "null"], "minimum": MIN_ADAPTER_SCALE,
                  "maximum": MAX_ADAPTER_SCALE,
                  "description": "default: the adapter's own (0: as if absent)"}}}
#: ``lora``: one adapter or a list of them (each named once: not stated, a 400).
LORA: Schema = {
    "description": "LoRA adapters to draw with (a diffuserve extension): one or a list; "
                   "the model's own (a derived model's) are added; each name once. In a "
                   "form, the part's JSON text (or lora[name], lora[scale] parts).",
    "anyOf": [LORA_ADAPTER, {"type": "array", "items": LORA_ADAPTER,
                             "maxItems": MAX_ADAPTERS_PER_REQUEST}]}

#: The fields refused with any value but null: no model here draws GIF or SVG, and these
#: only go with those formats.
NEVER_SET = ("frame_count", "frame_duration_ms", "svg")


def _digits_between(low: str, high: str) -> str:
    """A regular expression for the numbers from ``low`` to ``high``, written with as
    many digits each (leading zeros allowed: the caller bounds the first digit)."""
    if len(low) == 1:
        return low if low == high else f"[{low}-{high}]"
    if low == "0" * len(low) and high == "9" * len(high):
        return f"[0-9]{{{len(low)}}}"
    if low[0] == high[0]:
        return low[0] + _digits_between(low[1:], high[1:])
    rest = len(low) - 1
    parts = [low[0] + _digits_between(low[1:], "9" * rest)]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}]" + _digits_between(
            "0" * rest, "9" * rest))
    parts.append(high[0] + _digits_between("0" * rest, high[1:]))
    return "(?:" + "|".join(parts) + ")"


def side_pattern(limits: SizeLimits) -> str:
    """Every side ``limits`` allows, as a regular expression (no leading zeros)."""
    if limits.multiple > 1:
        return "(?:" + "|".join(str(side) for side in range(
            limits.multiple * -(-limits.min_side // limits.multiple), limits.max_side + 1,
            limits.multiple)) + ")"
    low, high = limits.min_side, limits.max_side
    ranges = [(max(low, 10 ** (digits - 1)), min(high, 10 ** digits - 1))
              for digits in range(len(str(low)), len(str(high)) + 1)]
    return "(?:" + "|".join(_digits_between(str(a), str(b)) for a, b in ranges) + ")"


def size_pattern(limits: SizeLimits) -> str:
    side = side_pattern(limits)
    return f"^{side}x{side}$"


#: The free sizes' schemas in ``components/schemas``, by their limits.
SIZE_SCHEMA_NAMES = {FREE_SIZE: "FreeSize", ANY_SIZE: "AnySize"}
FREE_SIZE_PATTERN = size_pattern(FREE_SIZE)
ANY_SIZE_PATTERN = size_pattern(ANY_SIZE)


def _size_ref(limits: SizeLimits) -> Schema:
    return {"$ref": f"#/components/schemas/{SIZE_SCHEMA_NAMES[limits]}"}


def _size_note(limits: SizeLimits) -> str:
    return (f"Any {limits.hint} (the pattern states the sides; the ratio and the pixel "
            "budget cannot be written as one).")


FREE_SIZE_NOTE = (f"Free sizes: for gpt-image-2 and later, {FREE_SIZE.hint}; for any other "
                  f"name (a served model's own), {ANY_SIZE.hint}. The patterns state the "
                  "sides; the ratio and the pixel budget cannot be written as one.")
SEED_NOTE = f"Image i of a request uses seed + i: seed + n - 1 must stay <= {MAX_SEED}."
#: The upload rules of every row of the rule table.
_ALL_UPLOADS = [rules.uploads for rules in (GENERIC, *RULES_BY_NAME.values())]
#: Every format any name takes as an upload.
IMAGE_FORMATS = tuple(dict.fromkeys(fmt for uploads in _ALL_UPLOADS for fmt in uploads.formats))
#: What any name takes at most: every format, the most images.
ANY_UPLOADS = UploadRules(
    max_images=max(uploads.max_images for uploads in _ALL_UPLOADS),
    formats=IMAGE_FORMATS, max_bytes=max(uploads.max_bytes for uploads in _ALL_UPLOADS),
    square=False, input_fidelity=True)
_BASE64 = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"


@dataclass(frozen=True)
class Family:
    """Model names that one set of rules governs; no names: any other name."""

    names: tuple[str, ...]
    rules: ModelRules

    @property
    def uploads(self) -> UploadRules:
        return self.rules.uploads


def families(refused: Iterable[str] = ()) -> list[Family]:
    """The names of the rule table grouped by the rules they follow (uploads included),
    then every other name; ``refused`` names are in no family."""
    grouped: dict[ModelRules, list[str]] = {}
    for name, rules in RULES_BY_NAME.items():
        if name not in refused:
            grouped.setdefault(rules, []).append(name)
    found = [Family(tuple(names), rules) for rules, names in grouped.items()]
    return [*found, Family((), GENERIC)]


def _enum(values: Iterable[Any]) -> Schema:
    return {"enum": list(dict.fromkeys(values))}


def _size(rules: ModelRules) -> Schema:
    if rules.free_limits is None:
        return {"type": "string", **_enum(rules.sizes)}
    return {"type": "string", "anyOf": [_enum(rules.sizes), _size_ref(rules.free_limits)]}


def components() -> dict[str, Schema]:
    """The schemas the bodies refer to, for ``components/schemas``."""
    return {name: {"type": "string", "pattern": size_pattern(limits),
                   "description": _size_note(limits)}
            for limits, name in SIZE_SCHEMA_NAMES.items()}


def field_schema(name: str, family: Family) -> Schema | None:
    """One field's schema (no null) for ``family``; None where it refuses every value."""
    rules = family.rules
    options = rules.image_options
    known: dict[str, Schema | None] = {
        "prompt": {"type": "string", "minLength": 1, "maxLength": rules.max_prompt_length},
        "n": {"type": "integer", "minimum": 1, "maximum": rules.max_n},
        "size": _size(rules),
        "quality": _enum(rules.qualities),
        # A name without styles takes either style and ignores it, as OpenAI does.
        "style": _enum(rules.styles or STYLES),
        "response_format": _enum(rules.response_formats),
        "user": {"type": "string", "maxLength": MAX_USER_LENGTH},
        "safety_identifier": {"type": "string", "maxLength": MAX_SAFETY_IDENTIFIER_LENGTH},
        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS},
        "guidance_scale": {"type": "number", "minimum": 0, "maximum": MAX_GUIDANCE},
        "negative_prompt": {"type": "string", "maxLength": rules.max_prompt_length},
        "input_fidelity": _enum(INPUT_FIDELITIES) if family.uploads.input_fidelity else None,
        # The GPT-image fields: only names that take them (protocol/image_options.py).
        "background": _enum(BACKGROUNDS) if options else None,
        "moderation": _enum(MODERATION_LEVELS) if options else None,
        "output_format": _enum(OUTPUT_FORMATS) if options else None,
        "output_compression": {"type": "integer", "minimum": 0, "maximum": 100}
        if options else None,
        "partial_images": {"type": "integer", "minimum": 0, "maximum": MAX_PARTIAL_IMAGES}
        if options else None,
        "stream": {"type": "boolean"} if options else None,
        "complexity": _enum(COMPLEXITIES) if options else None,
        "lora": LORA,
        **dict.fromkeys(NEVER_SET),
    }
    if name not in known:
        raise KeyError(f"no published bounds for the field {name!r}")
    return known[name]


def _nullable(schema: Schema | None) -> Schema:
    """JSON's form: null means "not given", as OpenAI treats it."""
    if schema is None:
        return {"type": "null"}
    nullable = dict(schema)
    if "type" in schema:  # every keyword must admit it, the type's too
        nullable["type"] = [schema["type"], "null"]
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    if "anyOf" in schema:  # a size: the named ones, or a free one
        nullable["anyOf"] = [*schema["anyOf"], {"type": "null"}]
    return nullable


def _widest(schemas: list[Schema | None]) -> Schema | None:
    """One field's bounds over every family: what Swagger UI shows."""
    given = [schema for schema in schemas if schema is not None]
    if not given:
        return None
    if all(schema == given[0] for schema in given):  # the same for every family
        return given[0]
    widest: Schema = {}
    for schema in given:
        for key, value in schema.items():
            if key in ("minimum", "minLength"):
                widest[key] = min(widest.get(key, value), value)
            elif key in ("maximum", "maxLength"):
                widest[key] = max(widest.get(key, value), value)
            elif key not in ("enum", "anyOf"):
                widest[key] = value
    values = [value for schema in given
              for value in (*schema.get("enum", ()),
                            *(v for part in schema.get("anyOf", ()) for v in part.get("enum", ())))]
    refs = list({part["$ref"]: part for schema in given for part in schema.get("anyOf", ())
                 if "$ref" in part}.values())
    if refs:
        widest["anyOf"] = [_enum(values), *refs]  # the named sizes, or a free one
    elif values:
        widest.update(_enum(values))
    return widest


def _model_schemas(refused: tuple[str, ...], default: str, *, empty_is_default: bool,
                   json: bool) -> list[tuple[Family, Schema, bool]]:
    """Each family with its ``model`` schema and whether ``model`` may be omitted (the
    family of ``default``, the name an omitted model means on this server)."""
    found = families(refused)
    named = [name for family in found for name in family.names]
    if default in refused:
        default_family = None
    else:
        default_family = next((family for family in found if default in family.names),
                              found[-1])
    # What means "the default" besides an omitted field.
    absent: list[Any] = [*([None] if json else []), *([""] if empty_is_default else [])]
    out = []
    for family in found:
        schema: Schema
        if family.names:
            schema = _enum(family.names)
        else:
            # Any other name: the served models' own names and aliases.
            schema = {"type": "string", "not": _enum(
                [*named, *refused, *([""] if empty_is_default else [])])}
        omitted = family is default_family
        if omitted and absent:
            schema = (_enum([*schema["enum"], *absent]) if "enum" in schema
                      else {"anyOf": [schema, _enum(absent)]})
        out.append((family, schema, omitted))
    return out


def _body(fields: Iterable[str], *, json: bool, default: str, empty_is_default: bool,
          required: tuple[str, ...] = ("prompt",), refused: tuple[str, ...] = (),
          files: Mapping[str, Schema] | None = None,
          files_for: Callable[[Family], Schema] | None = None,
          between_files: Iterable[Schema] = (), in_words: Iterable[str] = ()) -> Schema:
    """An object schema over ``fields`` and ``files``: the widest bounds in
    ``properties``, each family's narrower ones in one ``anyOf`` branch, the rules
    between fields (but those named ``in_words``, which the description states) and
    ``between_files`` in ``allOf``; ``required`` fields are never null."""
    models = _model_schemas(refused, default, empty_is_default=empty_is_default, json=json)
    names = [name for name in fields if name != "model"]
    bounds = [{name: field_schema(name, family) for name in names}
              for family, _, _ in models]

    def published(name: str, schema: Schema | None) -> Schema | bool:
        if name in required:
            return schema or False
        # A field a family refuses: null only in JSON, absent from a form.
        return _nullable(schema) if json else (schema or False)

    properties: Schema = {"model": {
        "type": ["string", "null"] if json else "string",
        "description": "The model name; each family of names has its own bounds (anyOf)."}}
    for name in names:
        widest = published(name, _widest([each[name] for each in bounds]))
        if widest is not False:  # a form field no name takes is simply not listed
            properties[name] = widest
    names = [name for name in names if name in properties]
    bounds = [{name: each[name] for name in names} for each in bounds]
    properties.update(files or {})
    branches = []
    for (family, model, omitted), each in zip(models, bounds, strict=True):
        narrowed: Schema = {"model": model}
        narrowed.update((name, published(name, schema)) for name, schema in each.items()
                        if published(name, schema) != properties[name])
        narrowed.update((name, schema) for name, schema in
                        (files_for(family) if files_for else {}).items()
                        if schema != properties.get(name))
        branch: Schema = {"title": ", ".join(family.names) or "any other model name",
                          "properties": narrowed}
        if not omitted:
            branch["required"] = ["model"]
        branches.append(branch)
    stated = [rule for name, rule in _between_fields(json).items() if name not in in_words]
    rules = [rule for rule in (*stated, *between_files)
             if set(_mentions(rule)) <= set(properties)]
    schema: Schema = {"type": "object", "additionalProperties": False,
                      "properties": properties, "anyOf": branches}
    if required:
        schema["required"] = list(required)
    if rules:
        schema["allOf"] = rules
    return schema


def _mentions(rule: Schema) -> list[str]:
    return [name for branch in rule["anyOf"] for name in (
        *branch.get("properties", {}), *branch.get("required", ()))]


def _between_fields(json: bool) -> dict[str, Schema]:
    """The rules between the GPT-image fields (protocol/image_options.py), each as the
    ways to satisfy it, by the field it constrains; an absent field counts as its
    default."""
    null = [None] if json else []
    by_format = []
    for fmt in OUTPUT_FORMATS:
        branch: Schema
        if fmt == "png":
            # The default format, and lossless: output_compression only at 100.
            branch = {"properties": {"output_format": _enum([fmt, *null]),
                                     "output_compression": _enum([100, *null])}}
        else:
            branch = {"required": ["output_format"], "properties": {"output_format": _enum([fmt])}}
        if fmt == "jpeg":  # no alpha channel: no transparent background
            branch["properties"]["background"] = _enum(
                [*(background for background in BACKGROUNDS if background != "transparent"),
                 *null])
        by_format.append(branch)
    return {
        "output_format": {"anyOf": by_format},
        # Partial images are streamed.
        "partial_images": {"anyOf": [
            {"properties": {"partial_images": _enum([0, *null])}},
            {"required": ["stream"], "properties": {"stream": {"const": True}}}]},
    }


#: What the names' rules cannot know: the served model's own abilities.
MODEL_NOTE = ("A served model that cannot do what is asked (edit, draw variations, a "
              "transparent background) answers 400 unsupported_value.")


def _description(what: str, *notes: str) -> str:
    return " ".join((what, *notes, SEED_NOTE, FREE_SIZE_NOTE, MODEL_NOTE))


def generation_body(default: str) -> Schema:
    """``POST /v1/images/generations``: the JSON body (``default``: the name an omitted
    ``model`` means on this server)."""
    schema = _body(ImageGenerationRequest.model_fields, json=True, default=default,
                   empty_is_default=False)
    schema["description"] = _description(
        "OpenAI's images.generate body; each family of model names narrows the bounds as "
        "OpenAI does (one anyOf branch each). seed, num_inference_steps, guidance_scale and "
        "negative_prompt are diffuserve extensions.", NEVER_SET_NOTE)
    return schema


def _image_url(formats: Iterable[str], remote: bool) -> Schema:
    """A data URL of one of ``formats`` (an http(s) URL too where the operator lets the
    server fetch them)."""
    types = "|".join(formats)
    url: Schema = {"type": "string", "pattern": f"^data:image/(?:{types});base64,{_BASE64}$"}
    if remote:
        url = {"type": "string", "anyOf": [{"pattern": url["pattern"]},
                                           {"pattern": "^https?://"}]}
    return url


def _json_image(formats: Iterable[str], remote: bool, *, nullable: bool = False) -> Schema:
    """One image of the JSON form, as ``read_edit_json`` takes it: ``{"image_url": URL}``
    or the URL itself (null too where ``nullable``: the field is then not given)."""
    url = _image_url(formats, remote)
    shapes: list[Schema] = [
        {"type": "object", "required": ["image_url"], "properties": {"image_url": url}}, url]
    return {"anyOf": [*shapes, *([{"type": "null"}] if nullable else [])]}


def _images(uploads: UploadRules, remote: bool) -> Schema:
    """``images``: a list of images (null: not given, when one ``image`` is), as many as
    the name takes (the served model's own limit is in words)."""
    return {"type": ["array", "null"], "minItems": 1, "maxItems": uploads.max_images,
            "items": _json_image(uploads.formats, remote)}


def _json_files(uploads: UploadRules, remote: bool) -> Schema:
    """The images of a JSON edit whose name takes ``uploads``."""
    return {"images": _images(uploads, remote),
            "image": _json_image(uploads.formats, remote, nullable=True)}


#: A JSON edit's images are a list (``images``) or one ``image``, exactly one of the two
#: (``read_edit_json`` refuses both and neither); a null one is not given. With it, the
#: rule that partial images are streamed is said in words instead: both would multiply
#: the branches past the intersections that schemathesis' canonicalizer (jsonschema_rs)
#: allows, and it would give up on the body.
IMAGES_OR_IMAGE: Schema = {"anyOf": [
    {"required": ["images"],
     "properties": {"images": {"type": "array"}, "image": {"type": "null"}}},
    {"required": ["image"],
     "properties": {"image": {"type": ["object", "string"]}, "images": {"type": "null"}}},
]}
#: The fields of either body that no model here takes (GIF and SVG output).
NEVER_SET_NOTE = (f"{', '.join(NEVER_SET)} (GIF and SVG output) are answered 400 with any "
                  "value but null: no model here draws GIF or SVG.")


def _uploads_note() -> str:
    square = [name for name, rules in RULES_BY_NAME.items() if rules.uploads.square]
    any_other, squares = GENERIC.uploads, RULES_BY_NAME[square[0]].uploads
    return (f"Images must be real images: {', '.join(any_other.formats)} below "
            f"{any_other.max_bytes >> 20} MB ({', '.join(square)}: square "
            f"{', '.join(squares.formats)} below {squares.max_bytes >> 20} MB); a mask or "
            f"markup a png of the image's size with fully transparent pixels, below "
            f"{MASK_MAX_BYTES >> 20} MB. Several images (the mask applies to the first) "
            "only up to what the served model takes in one edit (most take one; "
            "multi-reference models, such as Qwen-Image-Edit-Plus or FLUX.2, more): beyond "
            "it, 400 too_many_images saying its limit.")


def edit_json_body(default: str, *, remote_urls: bool = False) -> Schema:
    """``POST /v1/images/edits`` as JSON: ``images: [{image_url}]`` or one ``image``,
    each image and the ``mask`` as ``{image_url}`` or the URL itself (data URLs; http(s)
    URLs too where the operator allows them)."""
    schema = _body(
        [*EDIT_FIELDS, "moderation"], json=True, default=default, empty_is_default=True,
        refused=NO_EDIT_NAMES,
        files={**_json_files(ANY_UPLOADS, remote_urls),
               "mask": _json_image(["png"], remote_urls, nullable=True)},
        files_for=lambda family: _json_files(family.uploads, remote_urls),
        between_files=[IMAGES_OR_IMAGE], in_words=("partial_images",))
    schema["description"] = _description(
        "OpenAI's images.edit body as JSON; each family of model names narrows the bounds "
        f"(one anyOf branch each; {', '.join(NO_EDIT_NAMES)} cannot edit). The images as "
        "images (a list) or one image as image, not both; each image and the mask as "
        '{"image_url": URL} or the URL itself. partial_images above 0 only with '
        "stream=true.", NEVER_SET_NOTE, _uploads_note())
    return schema


def _binary() -> Schema:
    return {"type": "string", "format": "binary"}


#: How the SDKs may also name the file parts (one of each at most, as the schema's).
FORM_SPELLINGS = ("Files may also be sent as image[] and mask[] (as the SDKs do for "
                  "lists): several images, as many as the name and the served model take, "
                  "and one mask.")


def edit_form_body(default: str) -> Schema:
    """``POST /v1/images/edits`` as multipart: every field a string part, the files
    ``image``, ``mask`` and ``markup``."""
    schema = _body(
        EDIT_FIELDS, json=False, default=default, empty_is_default=True,
        required=("prompt", "image"), refused=NO_EDIT_NAMES,
        # markup: a transparent png drawn over the image to guide the edit, for the
        # names whose rules take it (GPT-image names and any other name).
        files={"image": _binary(), "mask": _binary(), "markup": _binary()},
        files_for=lambda family: {} if family.rules.markup else {"markup": False})
    # "A mask or a markup, not both" is one more anyOf, which would double the branches
    # past what schema-driven generators (schemathesis') can unfold: it is said in words.
    schema["description"] = _description(
        "OpenAI's images.edit form; each family of model names narrows the bounds (one "
        f"anyOf branch each; {', '.join(NO_EDIT_NAMES)} cannot edit). A markup cannot be "
        "combined with a mask. frame_count, frame_duration_ms and svg[...] parts (GIF and "
        "SVG output, which no model here draws) are answered 400.", FORM_SPELLINGS,
        _uploads_note())
    return schema


def variation_form_body(default: str) -> Schema:
    """``POST /v1/images/variations`` as multipart: one image and the variation fields."""
    schema = _body(VARIATION_FIELDS, json=False, default=default, empty_is_default=True,
                   required=("image",), files={"image": _binary()})
    schema["description"] = _description(
        "OpenAI's images.create_variation form; each family of model names narrows the "
        "bounds (one anyOf branch each). The image may also be sent as image[].",
        _uploads_note())
    return schema


def check_form_body() -> Schema:
    """``POST /v1/content_provenance_checks``: one file, an image."""
    return {"type": "object", "required": ["file"], "additionalProperties": False,
            "properties": {"file": {**_binary(), "description": (
                "The image to check: PNG, JPEG or WebP, less than 50 MB")}},
            "description": "OpenAI's content_provenance_checks.create form."}


def form_encoding(fields: Iterable[str]) -> Schema:
    """The content types of a form's file parts, and of its parts sent as JSON."""
    images = ", ".join(f"image/{fmt}" for fmt in IMAGE_FORMATS)
    types = {"image": images, "mask": "image/png", "markup": "image/png",
             "lora": "application/json"}
    return {name: {"contentType": types[name]} for name in fields if name in types}

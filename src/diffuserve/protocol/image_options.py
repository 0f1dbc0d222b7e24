"""The GPT-image request fields: output format and compression, background, moderation,
streaming, partial images, complexity, the safety identifier — checked as OpenAI does.

Formats the server cannot produce honestly (GIF animations, SVG vectorisations) are
refused with a 400 that names the model, never answered with a PNG under another name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diffuserve.protocol.errors import InvalidRequestError

if TYPE_CHECKING:
    from diffuserve.protocol.generations import ImageGenerationRequest

OUTPUT_FORMATS = ("png", "jpeg", "webp")
#: Formats in the SDK that no model here draws honestly.
UNSUPPORTED_FORMATS = ("gif", "svg")
BACKGROUNDS = ("transparent", "opaque", "auto")
MODERATION_LEVELS = ("low", "auto")
COMPLEXITIES = ("low", "medium", "high")
MAX_PARTIAL_IMAGES = 3
MAX_SAFETY_IDENTIFIER_LENGTH = 256
#: Fields that only GPT-image names (and custom model names) take.
IMAGE_OPTION_FIELDS = ("background", "moderation", "output_format", "output_compression",
                       "partial_images", "stream", "complexity", "frame_count",
                       "frame_duration_ms", "svg")


@dataclass(frozen=True)
class ImageOptions:
    """The output and delivery choices of one request, defaults filled in."""

    output_format: str = "png"
    output_compression: int = 100
    #: As requested (``auto`` kept: streamed events echo the request).
    background: str = "auto"
    moderation: str = "auto"
    stream: bool = False
    partial_images: int = 0
    complexity: str | None = None
    safety_identifier: str | None = None

    @property
    def content_type(self) -> str:
        return f"image/{self.output_format}"

    @property
    def resolved_background(self) -> str:
        """What the response reports: transparent only when asked for."""
        return "transparent" if self.background == "transparent" else "opaque"


def _one_of(value: Any, allowed: tuple[str, ...], param: str) -> str:
    if value not in allowed:
        raise InvalidRequestError(f"{value!r} is not one of {list(allowed)!r} - {param!r}",
                                  param=param, code="invalid_value")
    return str(value)


def _in_range(value: int, low: int, high: int, param: str) -> int:
    if not low <= value <= high:
        raise InvalidRequestError(
            f"Invalid '{param}': expected an integer between {low} and {high}, but got "
            f"{value} instead.", param=param,
            code="integer_below_min_value" if value < low else "integer_above_max_value")
    return value


def refuse_image_options(req: ImageGenerationRequest, model: str) -> None:
    """DALL·E names take none of the GPT-image fields, as on OpenAI."""
    for field in IMAGE_OPTION_FIELDS:
        if getattr(req, field) is not None:
            raise InvalidRequestError(
                f"Unknown parameter: '{field}'. It is only supported for the GPT image models, "
                f"not for {model}.", param=field, code="unknown_parameter")


def validate_image_options(req: ImageGenerationRequest, model: str, n: int) -> ImageOptions:
    """The options of a request to a name that takes them."""
    output_format = "png" if req.output_format is None else req.output_format
    if output_format in UNSUPPORTED_FORMATS:
        raise InvalidRequestError(
            f"output_format={output_format!r} is not supported by model {model!r}: it draws "
            "raster images only. Use 'png', 'jpeg' or 'webp'.",
            param="output_format", code="unsupported_value")
    _one_of(output_format, (*OUTPUT_FORMATS, *UNSUPPORTED_FORMATS), "output_format")
    for field in ("frame_count", "frame_duration_ms"):
        if getattr(req, field) is not None:
            raise InvalidRequestError(f"'{field}' is only supported with output_format='gif'.",
                                      param=field, code="invalid_value")
    if req.svg is not None:
        raise InvalidRequestError("'svg' is only supported with output_format='svg'.",
                                  param="svg", code="invalid_value")

    compression = 100
    if req.output_compression is not None:
        compression = _in_range(req.output_compression, 0, 100, "output_compression")
        if output_format == "png" and compression != 100:
            raise InvalidRequestError(
                "output_compression is only supported for the jpeg and webp output formats.",
                param="output_compression", code="invalid_value")

    background = "auto" if req.background is None else _one_of(
        req.background, BACKGROUNDS, "background")
    if background == "transparent" and output_format == "jpeg":
        raise InvalidRequestError(
            "Transparent backgrounds need output_format 'png' or 'webp': jpeg has no alpha "
            "channel.", param="background", code="invalid_value")

    moderation = "auto" if req.moderation is None else _one_of(
        req.moderation, MODERATION_LEVELS, "moderation")
    complexity = None if req.complexity is None else _one_of(
        req.complexity, COMPLEXITIES, "complexity")
    partial_images = 0
    if req.partial_images is not None:
        partial_images = _in_range(req.partial_images, 0, MAX_PARTIAL_IMAGES, "partial_images")
    stream = bool(req.stream)
    if req.partial_images and not stream:
        raise InvalidRequestError("partial_images is only supported with stream=true.",
                                  param="partial_images", code="invalid_value")

    return ImageOptions(output_format=output_format, output_compression=compression,
                        background=background, moderation=moderation, stream=stream,
                        partial_images=partial_images, complexity=complexity,
                        safety_identifier=validate_safety_identifier(req))


def validate_safety_identifier(req: ImageGenerationRequest) -> str | None:
    """Every name takes it (it replaces ``user``); an empty one means none."""
    safety_identifier = req.safety_identifier or None
    if safety_identifier is not None and len(safety_identifier) > MAX_SAFETY_IDENTIFIER_LENGTH:
        raise InvalidRequestError(
            "Invalid 'safety_identifier': string too long. Expected a string with maximum "
            f"length {MAX_SAFETY_IDENTIFIER_LENGTH}, but got a string with length "
            f"{len(safety_identifier)} instead.", param="safety_identifier",
            code="string_above_max_length")
    return safety_identifier

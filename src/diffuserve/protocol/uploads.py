"""Images sent to the edits and variations routes: decoded safely, checked as OpenAI
checks them, masks turned into diffusers' convention.

The HTTP layer hands over :class:`Upload` objects (multipart files, or data URLs of the
JSON form); nothing here knows about multipart itself.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from diffuserve.protocol.errors import InvalidRequestError

#: Pixels in one uploaded image at most (Pillow's own bomb check is a warning at 89 MP).
MAX_IMAGE_PIXELS = 40_000_000
FORMATS = {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg"}
_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+)?(;[a-z0-9=-]+)*;base64,(.*)$", re.I | re.S)


@dataclass(frozen=True)
class Upload:
    """One uploaded file: what the client called it and its bytes."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class DecodedImage:
    """An uploaded image, decoded: its pixels (RGBA when it has transparency) and format."""

    image: Image.Image
    format: str
    size_bytes: int

    @property
    def has_transparency(self) -> bool:
        if self.image.mode != "RGBA":
            return False
        lowest, _ = self.image.getchannel("A").getextrema()
        return bool(lowest == 0)


def upload_from_data_url(url: str, param: str, *, remote_allowed: bool = False) -> Upload:
    """The JSON form's ``image_url``: a data URL; remote URLs are refused."""
    match = _DATA_URL.match(url.strip())
    if match is None:
        if url.startswith(("http://", "https://")):
            raise InvalidRequestError(
                f"Invalid '{param}': this server does not fetch remote image URLs (its "
                "operator can allow it). Send the image as a data URL "
                "(data:image/png;base64,…) or as a file.", param=param,
                code="invalid_image_url")
        raise InvalidRequestError(f"Invalid '{param}': expected a data URL of an image.",
                                  param=param, code="invalid_image_url")
    try:
        data = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"Invalid '{param}': the data URL is not valid base64.",
                                  param=param, code="invalid_image_url") from None
    return Upload(filename=param, content_type=match.group(1) or "", data=data)


def decode_image(upload: Upload, param: str, *, formats: tuple[str, ...],
                 max_bytes: int) -> DecodedImage:
    """``upload`` as an image of one of ``formats`` (``png``, ``webp``, ``jpeg``), at most
    ``max_bytes`` and :data:`MAX_IMAGE_PIXELS`; OpenAI's 400 for anything else."""
    if len(upload.data) >= max_bytes:
        raise InvalidRequestError(
            f"Invalid '{param}': the image is {len(upload.data)} bytes; it must be less than "
            f"{max_bytes // (1 << 20)} MB.", param=param, code="image_too_large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(upload.data))
            kind = FORMATS.get(opened.format or "")
            if kind is None or kind not in formats:
                raise InvalidRequestError(
                    f"Invalid '{param}': unsupported image format "
                    f"{(opened.format or 'unknown').lower()!r}. Supported: "
                    f"{', '.join(formats)}.", param=param, code="invalid_image_format")
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise InvalidRequestError(
                    f"Invalid '{param}': {opened.width}x{opened.height} is more than "
                    f"{MAX_IMAGE_PIXELS} pixels.", param=param, code="image_too_large")
            opened.load()
    except InvalidRequestError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning):
        raise InvalidRequestError(
            f"Invalid image file or mode for '{param}', please check your image file.",
            param=param, code="invalid_image") from None
    image = ImageOps.exif_transpose(opened)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    image = image.convert("RGBA" if has_alpha else "RGB")
    return DecodedImage(image, kind, len(upload.data))


def mask_from_alpha(mask: DecodedImage, image: Image.Image, param: str = "mask") -> Image.Image:
    """OpenAI's mask (fully transparent pixels mark where to edit) as diffusers' (``L``,
    white = redraw), checked against the image it masks."""
    if mask.image.size != image.size:
        raise InvalidRequestError(
            f"Invalid '{param}': it is {mask.image.width}x{mask.image.height} but the image "
            f"is {image.width}x{image.height}; they must be the same size.",
            param=param, code="invalid_mask_size")
    if mask.image.mode != "RGBA":
        raise InvalidRequestError(
            f"Invalid '{param}': it has no alpha channel. Mark the area to edit with fully "
            "transparent pixels.", param=param, code="invalid_mask")
    return redraw_where_clear(mask.image)


def redraw_where_clear(rgba: Image.Image) -> Image.Image:
    """White where ``rgba`` is fully transparent, black elsewhere."""
    alpha = rgba.getchannel("A")
    return alpha.point(lambda value: 255 if value == 0 else 0)


def flatten(image: Image.Image) -> Image.Image:
    """The RGB picture a model starts from (transparent areas on white); the mask keeps
    what the transparency meant."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    canvas = Image.new("RGB", image.size, (255, 255, 255))
    canvas.paste(image, mask=image.getchannel("A"))
    return canvas

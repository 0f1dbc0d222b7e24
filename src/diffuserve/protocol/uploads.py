"""Images sent to the edits and variations routes: checked before they are decoded,
decoded safely, checked as OpenAI checks them, masks turned into diffusers' convention.

Two steps, so that nothing costly happens before a request is known to be acceptable:
:func:`probe_image` reads an upload's header only (format, declared size), cheap enough
for the event loop, and refuses what is too large or of the wrong format;
:func:`decode_probed` decodes the pixels (CPU and memory: callers run it on a worker
thread within a pixel budget). The HTTP layer hands over :class:`Upload` objects
(multipart files, or data URLs of the JSON form); nothing here knows about multipart.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from diffuserve.protocol.errors import InvalidRequestError

#: Pixels in one uploaded image at most (Pillow's own bomb check is a warning at 89 MP).
MAX_IMAGE_PIXELS = 40_000_000
#: Pixels of all the uploads of one request together (images, mask, markup): one image
#: of the largest size and its mask.
MAX_REQUEST_PIXELS = 2 * MAX_IMAGE_PIXELS
#: Our format names and Pillow's: only these decoders ever see an upload's bytes.
PILLOW_FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}
FORMATS = {pillow: ours for ours, pillow in PILLOW_FORMATS.items()}
_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+)?(;[a-z0-9=-]+)*;base64,(.*)$", re.I | re.S)
#: Leading bytes of the formats a client is likeliest to send by mistake, to name them
#: in the refusal (their decoders are never tried).
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"),
               (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
               (b"\x00\x00\x01\x00", "ico"))


@dataclass(frozen=True)
class Upload:
    """One uploaded file: what the client called it and its bytes."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ProbedImage:
    """An upload whose header was read and found acceptable: its format and the size it
    declares (before any EXIF rotation). Its pixels are not decoded yet."""

    param: str
    upload: Upload
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


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


def upload_from_data_url(url: str, param: str) -> Upload:
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


def _invalid(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid image file or mode for '{param}', please check your image file.",
        param=param, code="invalid_image")


def _unsupported(data: bytes, param: str, formats: tuple[str, ...]) -> InvalidRequestError:
    sent = next((name for signature, name in _SIGNATURES if data.startswith(signature)),
                None)
    if sent is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        sent = "webp"
    if sent is None:
        return _invalid(param)
    return InvalidRequestError(
        f"Invalid '{param}': unsupported image format {sent!r}. Supported: "
        f"{', '.join(formats)}.", param=param, code="invalid_image_format")


def _open(data: bytes, formats: tuple[str, ...]) -> Image.Image:
    """Pillow's lazy open (the header only), trying ``formats``' decoders alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[f] for f in formats])


def probe_image(upload: Upload, param: str, *, formats: tuple[str, ...],
                max_bytes: int) -> ProbedImage:
    """``upload``'s header, checked: one of ``formats`` (``png``, ``webp``, ``jpeg``), less
    than ``max_bytes``, at most :data:`MAX_IMAGE_PIXELS` declared; OpenAI's 400 for
    anything else. No pixel is decoded."""
    if len(upload.data) >= max_bytes:
        raise InvalidRequestError(
            f"Invalid '{param}': the image is {len(upload.data)} bytes; it must be less than "
            f"{max_bytes // (1 << 20)} MB.", param=param, code="image_too_large")
    try:
        with _open(upload.data, formats) as opened:
            kind, (width, height) = FORMATS[opened.format or ""], opened.size
    except UnidentifiedImageError:
        raise _unsupported(upload.data, param, formats) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequestError(f"Invalid '{param}': the image declares more than "
                                  f"{MAX_IMAGE_PIXELS} pixels.", param=param,
                                  code="image_too_large") from None
    except Exception:  # any failure of a decoder on untrusted bytes is the file's
        raise _invalid(param) from None
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidRequestError(
            f"Invalid '{param}': {width}x{height} is more than {MAX_IMAGE_PIXELS} pixels.",
            param=param, code="image_too_large")
    return ProbedImage(param, upload, kind, width, height)


def check_request_pixels(probed: list[ProbedImage]) -> None:
    """All of one request's uploads together within :data:`MAX_REQUEST_PIXELS`."""
    total = sum(image.pixels for image in probed)
    if total > MAX_REQUEST_PIXELS:
        raise InvalidRequestError(
            f"Invalid 'image': the uploaded images have {total} pixels together; one request "
            f"may send at most {MAX_REQUEST_PIXELS}.", param="image", code="image_too_large")


def decode_probed(probed: ProbedImage) -> DecodedImage:
    """The pixels of a probed upload, turned upright (EXIF), RGBA where it has any
    transparency (an alpha channel, or a PNG ``tRNS`` colour key), else RGB. Any problem
    of the file, its EXIF block included, is OpenAI's 400 naming the field."""
    try:
        with _open(probed.upload.data, (probed.format,)) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            # A tRNS chunk marks a colour (RGB, grey) or palette entries as transparent:
            # converting to RGBA applies it, as an alpha channel would be.
            has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                "transparency" in image.info)
            converted = image.convert("RGBA" if has_alpha else "RGB")
    except MemoryError:
        raise
    except Exception:  # any failure of a decoder on untrusted bytes is the file's
        raise _invalid(probed.param) from None
    return DecodedImage(converted, probed.format, len(probed.upload.data))


def decode_image(upload: Upload, param: str, *, formats: tuple[str, ...],
                 max_bytes: int) -> DecodedImage:
    """Probe, then decode: ``upload`` as an image of one of ``formats``."""
    return decode_probed(probe_image(upload, param, formats=formats, max_bytes=max_bytes))


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

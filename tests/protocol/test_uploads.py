"""Uploads checked before a pixel is decoded; decoded by the decoders their field takes;
every problem of the file, its EXIF block included, a 400 naming the field."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import pytest
from PIL import GifImagePlugin, Image

from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.uploads import MAX_IMAGE_PIXELS, Upload
from tests.support.edit_bodies import (
    checked_edit_form,
    parse_edit_form,
    parse_edit_json,
    parse_variation_form,
)
from tests.support.uploads import mask_png, png


def declared_png(width: int, height: int) -> Upload:
    """A PNG whose header declares ``width`` x ``height`` and whose pixels are garbage:
    probing it is fine, decoding it fails."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return Upload("big.png", "image/png", data)


def bad_exif(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 64)) -> Upload:
    """An image whose EXIF block is not TIFF data."""
    buffer = io.BytesIO()
    image = Image.new(mode, size, (0, 0, 0, 0) if mode == "RGBA" else (200, 30, 30))
    image.save(buffer, format=fmt, exif=b"Exif\x00\x00not a tiff block at all")
    return Upload(f"a.{fmt.lower()}", f"image/{fmt.lower()}", buffer.getvalue())


def refused(call: Any, *args: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        call(*args)
    return caught.value


def test_too_many_images_are_refused_before_any_is_read() -> None:
    # Sixteen images whose pixels cannot be decoded: refused by count, not as images.
    form = {"image[]": [declared_png(6320, 6320)] * 16, "prompt": ["x"]}

    error = refused(checked_edit_form, form, "dall-e-2")

    assert (error.param, error.code) == ("image", "too_many_images")


def test_a_declared_size_past_the_limit_is_refused_from_the_header() -> None:
    error = refused(checked_edit_form,
                    {"image": [declared_png(8000, 8000)], "prompt": ["x"]}, "dall-e-2")

    assert (error.param, error.code) == ("image", "image_too_large")
    assert str(MAX_IMAGE_PIXELS) in error.message


def test_reading_a_request_decodes_nothing() -> None:
    pending = checked_edit_form({"image": [declared_png(6000, 6000)], "prompt": ["x"]},
                                "dall-e-2")

    assert pending.pixels == 36_000_000
    # Its pixels are garbage: only decoding finds out, with the same 400 as ever.
    error = refused(parse_edit_form, {"image": [declared_png(64, 64)], "prompt": ["x"]},
                    "dall-e-2")
    assert (error.param, error.code) == ("image", "invalid_image")


@pytest.mark.parametrize(("field", "fmt"), [
    ("image", "PNG"), ("image", "WEBP"), ("image[]", "PNG"), ("image[]", "WEBP"),
    ("mask", "PNG"), ("markup", "PNG"),  # masks and markups are PNGs only
])
def test_an_exif_block_that_is_not_tiff_is_a_400_naming_the_field(field: str,
                                                                   fmt: str) -> None:
    form: dict[str, list[Any]] = {"prompt": ["x"], "model": ["gpt-image-1"],
                                  "image": [png()]}
    if field in ("image", "image[]"):
        form.pop("image")
        form[field] = [bad_exif(fmt)]
    else:
        form[field] = [bad_exif(fmt, "RGBA")]

    error = refused(parse_edit_form, form, "dall-e-2")

    expected = {"image[]": "image[0]"}.get(field, field)
    assert (error.param, error.code) == (expected, "invalid_image")


def test_a_bad_exif_block_is_a_400_for_variations_and_json_edits_too() -> None:
    error = refused(parse_variation_form, {"image": [bad_exif("PNG")]}, "dall-e-2")
    assert (error.param, error.code) == ("image", "invalid_image")

    url = "data:image/webp;base64," + base64.b64encode(bad_exif("WEBP").data).decode()
    error = refused(parse_edit_json, {"images": [{"image_url": url}], "prompt": "x",
                                      "model": "gpt-image-1"}, "dall-e-2")
    assert (error.param, error.code) == ("images[0]", "invalid_image")


def trns_png(mode: str, size: tuple[int, int] = (64, 64)) -> Upload:
    """A PNG without an alpha channel whose ``tRNS`` chunk makes its top half clear."""
    if mode == "P":
        image = Image.new("P", size, 1)
        image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        image.paste(0, (0, 0, size[0], size[1] // 2))
        transparency: Any = 0
    else:
        key = (0, 0, 0) if mode == "RGB" else 0
        image = Image.new(mode, size, (255, 255, 255) if mode == "RGB" else 255)
        image.paste(key, (0, 0, size[0], size[1] // 2))
        transparency = key
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=transparency)
    return Upload("mask.png", "image/png", buffer.getvalue())


@pytest.mark.parametrize("mode", ["RGB", "L", "P"])
def test_a_trns_colour_key_is_transparency_for_masks_and_images(mode: str) -> None:
    edit = parse_edit_form({"image": [png()], "mask": [trns_png(mode)], "prompt": ["x"]},
                           "dall-e-2")
    assert edit.mask.getpixel((10, 5)) == 255 and edit.mask.getpixel((10, 60)) == 0

    # Without a mask, a tRNS image masks itself as an alpha channel would.
    alone = parse_edit_form({"image": [trns_png(mode)], "prompt": ["x"]}, "dall-e-2")
    assert alone.mask.getpixel((10, 5)) == 255 and alone.mask.getpixel((10, 60)) == 0


def test_only_the_decoders_a_field_takes_see_its_bytes(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    opened: list[str] = []
    original = GifImagePlugin.GifImageFile._open

    def spy(self: GifImagePlugin.GifImageFile) -> None:
        opened.append("gif")
        original(self)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_open", spy)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="GIF")
    gif = Upload("a.gif", "image/gif", buffer.getvalue())

    error = refused(parse_edit_form, {"image": [gif], "prompt": ["x"]}, "dall-e-2")

    assert (error.param, error.code) == ("image", "invalid_image_format")
    assert "'gif'" in error.message and opened == []


def test_a_mask_is_checked_against_the_upright_image() -> None:
    # A 64x32 JPEG that EXIF turns upright to 32x64: the mask must be 32x64.
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (64, 32), (200, 30, 30)).save(buffer, format="JPEG", exif=exif)
    turned = Upload("a.jpg", "image/jpeg", buffer.getvalue())

    edit = parse_edit_form({"image": [turned], "mask": [mask_png((32, 64))],
                            "prompt": ["x"], "model": ["gpt-image-1"]}, "dall-e-2")

    assert edit.input_size == (32, 64)
    error = refused(parse_edit_form, {"image": [turned], "mask": [mask_png((64, 32))],
                                      "prompt": ["x"], "model": ["gpt-image-1"]}, "dall-e-2")
    assert (error.param, error.code) == ("mask", "invalid_mask_size")

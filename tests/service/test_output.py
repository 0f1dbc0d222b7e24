"""Output encoding: PNG at the configured zlib level, lossless at every level."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuserve.service.output import OutputWriter, encode
from diffuserve.storage.local import LocalImageStore
from diffuserve.storage.signing import UrlSigner


def _picture() -> Image.Image:
    rng = np.random.default_rng(0)
    small = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))
    return small.resize((256, 256), Image.Resampling.BICUBIC)


def test_png_levels_trade_size_for_speed_and_lose_nothing() -> None:
    picture = _picture()
    sizes = {}
    for level in (0, 1, 3, 6, 9):
        data = encode(picture, "png", png_compress_level=level)
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.format == "PNG"
            assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(picture))
        sizes[level] = len(data)
    # 1-3 are ISA-L's levels, 4-9 zlib's: on flat pictures zlib's 6 is smaller.
    assert sizes[0] > max(sizes[1], sizes[3]) > max(sizes[6], sizes[9])


def test_the_writer_encodes_at_its_configured_level(tmp_path: Path) -> None:
    picture = _picture()
    store = LocalImageStore(tmp_path, 60, UrlSigner(b"k" * 32, 60), link_path="/images")
    writer = OutputWriter(store, png_compress_level=0)
    (b64,) = asyncio.run(writer.encoded([picture], "png", 100))
    assert base64.b64decode(b64) == encode(picture, "png", png_compress_level=0)
    (item,) = asyncio.run(writer.items([picture], response_format="url", revised_prompt=None,
                                       base_url="http://127.0.0.1", now=0.0))
    key = item.url.rsplit("/", 1)[-1].split("?")[0] if item.url else ""
    assert (tmp_path / key).read_bytes() == encode(picture, "png", png_compress_level=0)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
@pytest.mark.parametrize("size", [(1, 1), (7, 3), (256, 256), (640, 480)])
def test_the_parallel_png_encoder_is_lossless_in_every_mode_and_size(
    mode: str, size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(size[0])
    picture = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), np.uint8), "RGBA")
    picture = picture.convert(mode)
    data = encode(picture, "png", png_compress_level=1)
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()  # checks every chunk's CRC and the zlib stream's checksum
        assert decoded.size == size and decoded.mode == mode
        assert np.array_equal(np.asarray(decoded), np.asarray(picture))


@pytest.mark.parametrize("level", [1, 6])  # ISA-L's bands and zlib's
def test_large_images_are_deflated_in_bands_that_join_into_one_stream(
    monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    import zlib

    from diffuserve.service import png

    monkeypatch.setattr(png, "_workers", 3)  # bands even where the machine has one core
    picture = _picture().resize((1024, 768))
    data = png.encode_png(picture, level)
    assert len(png._bands(768, 1024 * 3 + 1)) == 3
    # One IDAT whose zlib stream decompresses (adler32 checked) to the filtered rows.
    length = int.from_bytes(data[33:37], "big")
    assert data[37:41] == b"IDAT"
    raw = zlib.decompress(data[41:41 + length])
    assert len(raw) == 768 * (1024 * 3 + 1)
    with Image.open(io.BytesIO(data)) as decoded:
        assert np.array_equal(np.asarray(decoded), np.asarray(picture))

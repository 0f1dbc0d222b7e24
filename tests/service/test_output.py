"""Output encoding: PNG at the configured zlib level, lossless at every level."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import numpy as np
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
    for level in (0, 1, 6):
        data = encode(picture, "png", png_compress_level=level)
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.format == "PNG"
            assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(picture))
        sizes[level] = len(data)
    assert sizes[0] > sizes[1] > sizes[6]


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

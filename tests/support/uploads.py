"""Image uploads as a form or JSON body carries them: a picture, and an OpenAI mask."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from diffuserve.protocol.uploads import Upload


def png(size: tuple[int, int] = (64, 64), mode: str = "RGB", fill: Any = (200, 30, 30),
        fmt: str = "PNG") -> Upload:
    buffer = io.BytesIO()
    Image.new(mode, size, fill).save(buffer, format=fmt)
    return Upload("image.png", f"image/{fmt.lower()}", buffer.getvalue())


def mask_png(size: tuple[int, int] = (64, 64), clear_top: bool = True) -> Upload:
    image = Image.new("RGBA", size, (0, 0, 0, 255))
    if clear_top:
        image.paste((0, 0, 0, 0), (0, 0, size[0], size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Upload("mask.png", "image/png", buffer.getvalue())

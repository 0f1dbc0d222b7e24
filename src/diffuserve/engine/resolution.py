"""Where to draw: a model's native area at the requested aspect ratio, then resize."""

from __future__ import annotations

import math

from PIL import Image, ImageOps


def plan_size(width: int, height: int, native: int, multiple: int = 8) -> tuple[int, int]:
    """The generation size for an output of ``width``×``height``.

    Keeps the requested aspect ratio and the model's native pixel count (``native``²),
    rounded to ``multiple`` on each side, because a model drawn far from the resolution
    it was trained on produces repeated subjects or mush.
    """
    if width <= 0 or height <= 0 or native <= 0 or multiple <= 0:
        raise ValueError("sizes must be positive")
    aspect = width / height
    gen_h = math.sqrt(native * native / aspect)
    gen_w = gen_h * aspect
    return (
        max(multiple, round(gen_w / multiple) * multiple),
        max(multiple, round(gen_h / multiple) * multiple),
    )


def fit_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize ``image`` to exactly ``width``×``height`` without distortion.

    Scales to cover the target with a Lanczos filter and crops the few pixels that
    rounding to the generation multiple left over.
    """
    if image.size == (width, height):
        return image
    mode = image.mode if image.mode in ("RGB", "RGBA") else "RGB"
    return ImageOps.fit(image.convert(mode), (width, height), method=Image.Resampling.LANCZOS)

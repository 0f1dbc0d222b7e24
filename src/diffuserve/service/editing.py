"""After an edit: the pixels the mask keeps are the input's own, at the output size, with
the drawing blended into them across a narrow feather just outside the mask's edge."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from diffuserve.engine.resolution import fit_to_size

#: How far past the mask's edge the drawing is blended into the picture, as a share of
#: the output's shorter side: 4 px at 256², 16 px at 1024² (at least FEATHER_MIN_PX).
#: Without it, the edge was a hard line wherever the drawing and the picture differ.
FEATHER_SHARE = 1 / 64
FEATHER_MIN_PX = 2


def feather_width(width: int, height: int) -> int:
    """The feather, in pixels, of a ``width``×``height`` output."""
    return max(FEATHER_MIN_PX, round(min(width, height) * FEATHER_SHARE))


def feathered(mask: Image.Image, width: int) -> Image.Image:
    """``mask`` (``L``, white = redrawn) grown by a ramp that falls from white to black
    across ``width`` pixels outside it: the weight of the drawing at each pixel. What the
    mask redraws keeps its own weight; a pixel further than ``width`` from it weighs
    nothing, so the picture's own value stays there exactly."""
    weight = np.asarray(mask.convert("L"), np.uint8)
    grown = weight
    for step in range(1, width + 1):
        grown = _grown(grown)
        fade = round(255 * (1.0 - step / (width + 1)))
        ramp = ((grown.astype(np.uint16) * fade + 127) // 255).astype(np.uint8)
        weight = np.maximum(weight, ramp)
    return Image.fromarray(weight, "L")


def _grown(values: np.ndarray) -> np.ndarray:
    """Each pixel's largest value among its 3×3 neighbours (a dilation by one pixel)."""
    down = values.copy()
    np.maximum(down[1:], values[:-1], out=down[1:])
    np.maximum(down[:-1], values[1:], out=down[:-1])
    out = down.copy()
    np.maximum(out[:, 1:], down[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], down[:, 1:], out=out[:, :-1])
    return out


def keep_unmasked(images: Sequence[Image.Image], original: Image.Image,
                  mask: Image.Image) -> list[Image.Image]:
    """Each of ``images`` with the input's pixels wherever ``mask`` (white = redrawn) is
    black, beyond a feather of :func:`feather_width` past its edge in which the two are
    blended: a model drawing at its own resolution cannot blur what was not to change,
    and the edge shows no seam."""
    kept: list[Image.Image] = []
    for image in images:
        size = image.size
        base = fit_to_size(original, *size).convert(image.mode)
        where = fit_to_size(mask.convert("RGB"), *size).convert("L")
        kept.append(Image.composite(image, base, feathered(where, feather_width(*size))))
    return kept

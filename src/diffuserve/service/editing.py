"""After an edit: the pixels the mask keeps are the input's own, at the output size."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from diffuserve.engine.resolution import fit_to_size


def keep_unmasked(images: Sequence[Image.Image], original: Image.Image,
                  mask: Image.Image) -> list[Image.Image]:
    """Each of ``images`` with the input's pixels wherever ``mask`` (white = redrawn) is
    black: a model drawing at its own resolution cannot blur what was not to change."""
    kept: list[Image.Image] = []
    for image in images:
        size = image.size
        base = fit_to_size(original, *size).convert(image.mode)
        where = fit_to_size(mask.convert("RGB"), *size).convert("L")
        kept.append(Image.composite(image, base, where))
    return kept

"""After an edit: the drawing where the mask redraws, the input's own pixels where it
keeps them, and a narrow feather just outside its edge where the two are blended."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffuserve.service.editing import feather_width, feathered, keep_unmasked

RED, BLUE = (200, 30, 30), (30, 60, 200)


def top_half(side: int) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    mask.paste(255, (0, 0, side, side // 2))
    return mask


def test_pixels_beyond_the_feather_are_the_inputs_and_the_masked_area_is_the_drawing() -> None:
    drawing, picture = Image.new("RGB", (256, 256), BLUE), Image.new("RGB", (256, 256), RED)
    out = np.asarray(keep_unmasked([drawing], picture, top_half(256))[0]).astype(int)
    width = feather_width(256, 256)
    assert 2 <= width <= 8  # a few pixels
    assert (out[:128] == BLUE).all()  # what the mask redraws is the drawing, exactly
    assert (out[128 + width:] == RED).all()  # beyond the feather, the input, exactly
    # Within the feather, the drawing's share falls row by row from the edge outwards.
    band = out[128:128 + width, 0]
    assert ((band != RED).any(axis=1) & (band != BLUE).any(axis=1)).all()
    blue_share = (band[:, 2] - RED[2]) / (BLUE[2] - RED[2])
    assert (np.diff(blue_share) < 0).all() and 0 < blue_share[-1] < blue_share[0] < 1


@pytest.mark.parametrize(("side", "width"), [(256, 4), (512, 8), (1024, 16), (64, 2)])
def test_the_feather_is_a_share_of_the_output_at_its_own_size(side: int, width: int) -> None:
    assert feather_width(side, side) == width
    assert feather_width(side * 2, side) == width  # the shorter side decides
    # An input sent at another size is blended at the output's.
    drawing, picture = Image.new("RGB", (side, side), BLUE), Image.new("RGB", (64, 64), RED)
    out = np.asarray(keep_unmasked([drawing], picture, top_half(side))[0]).astype(int)
    edge = side // 2
    assert (out[edge + width:] == RED).all() and (out[:edge] == BLUE).all()
    assert (out[edge + width - 1] != RED).any()


def test_a_soft_masks_own_weights_stay_and_nothing_spreads_further_than_the_feather() -> None:
    mask = Image.new("L", (33, 33), 0)
    mask.putpixel((16, 16), 200)
    weights = np.asarray(feathered(mask, 4)).astype(int)
    assert weights[16, 16] == 200
    assert weights[16, 17] == 160 and weights[16, 20] == 40  # falls by a fifth a pixel
    assert not weights[:, :12].any() and not weights[:, 21:].any()
    assert np.array_equal(np.asarray(feathered(Image.new("L", (8, 8), 0), 4)),
                          np.zeros((8, 8)))

"""Drawing at a model's native area in the requested aspect ratio, then resizing."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from diffuserve.engine.resolution import fit_to_size, plan_size

CASES = pytest.mark.parametrize(
    ("width", "height", "native", "multiple"),
    [
        (1024, 1024, 512, 8),
        (1792, 1024, 512, 8),
        (1024, 1792, 512, 8),
        (1536, 1024, 1024, 8),
        (1024, 1536, 768, 64),
        (256, 256, 1024, 8),
        (1792, 1024, 1024, 16),
    ],
)


def test_square_request_draws_at_the_native_square() -> None:
    assert plan_size(1024, 1024, 512) == (512, 512)


def test_small_request_still_draws_at_native_size() -> None:
    # Drawing SD at 256² gives mush; draw at 512² and scale down afterwards.
    assert plan_size(256, 256, 512) == (512, 512)


@CASES
def test_planned_sides_are_multiples(width: int, height: int, native: int, multiple: int) -> None:
    gen_w, gen_h = plan_size(width, height, native, multiple)

    assert gen_w % multiple == 0
    assert gen_h % multiple == 0


@CASES
def test_planned_size_keeps_the_aspect_ratio(
    width: int, height: int, native: int, multiple: int
) -> None:
    gen_w, gen_h = plan_size(width, height, native, multiple)

    # Rounding each side to the multiple moves the ratio by at most half a step per side.
    tolerance = (multiple / 2) / min(gen_w, gen_h) * 2 * (width / height)
    assert gen_w / gen_h == pytest.approx(width / height, abs=tolerance)


@CASES
def test_planned_size_keeps_the_native_area(
    width: int, height: int, native: int, multiple: int
) -> None:
    gen_w, gen_h = plan_size(width, height, native, multiple)

    assert gen_w * gen_h == pytest.approx(native * native, rel=0.1)


def test_planned_size_matches_sdxl_buckets() -> None:
    # The aspect buckets SDXL was trained on: 1344x768 for 1.75:1.
    assert plan_size(1792, 1024, 1024, 64) == (1344, 768)


def test_extreme_aspect_ratio_never_plans_a_zero_side() -> None:
    assert plan_size(4096, 16, 64, 8) == (1024, 8)


@pytest.mark.parametrize(
    "args", [(0, 512, 512, 8), (512, -1, 512, 8), (512, 512, 0, 8), (512, 512, 512, 0)]
)
def test_non_positive_sizes_are_refused(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError, match="sizes must be positive"):
        plan_size(*args)


def _dark_box(image: Image.Image) -> tuple[int, int]:
    bbox = image.convert("L").point(lambda v: 255 if v < 128 else 0).getbbox()
    assert bbox is not None
    left, top, right, bottom = bbox
    return right - left, bottom - top


@pytest.mark.parametrize(("width", "height"), [(1792, 1024), (1024, 1792), (256, 256)])
def test_fit_gives_exactly_the_requested_size(width: int, height: int) -> None:
    drawn = Image.new("RGB", plan_size(width, height, 512), "white")

    assert fit_to_size(drawn, width, height).size == (width, height)


def test_fit_does_not_distort() -> None:
    # A 2:1 drawing fitted into a square: a circle must stay a circle, not an ellipse.
    drawn = Image.new("RGB", (600, 300), "white")
    ImageDraw.Draw(drawn).ellipse((250, 100, 350, 200), fill="black")

    fitted = fit_to_size(drawn, 300, 300)

    box_w, box_h = _dark_box(fitted)
    assert abs(box_w - box_h) <= 2


def test_fit_keeps_the_centre_of_the_drawing() -> None:
    drawn = Image.new("RGB", (600, 300), "white")
    ImageDraw.Draw(drawn).rectangle((280, 130, 320, 170), fill="black")

    fitted = fit_to_size(drawn, 300, 300)

    assert fitted.getpixel((150, 150)) == (0, 0, 0)


def test_fit_returns_an_image_already_the_right_size_untouched() -> None:
    drawn = Image.new("RGB", (512, 512), "white")

    assert fit_to_size(drawn, 512, 512) is drawn

"""usage: text tokens from the model's tokenizer, image tokens from OpenAI's table."""

from __future__ import annotations

import pytest

from diffuserve.service.usage import output_image_tokens, usage_for


@pytest.mark.parametrize("width, height, quality, tokens", [
    (1024, 1024, "low", 272), (1024, 1024, "medium", 1056), (1024, 1024, "high", 4160),
    (1024, 1536, "high", 6240), (1536, 1024, "medium", 1568),
])
def test_openais_published_sizes_use_its_table(width: int, height: int, quality: str,
                                               tokens: int) -> None:
    assert output_image_tokens(width, height, quality) == tokens


def test_other_sizes_scale_with_area_and_qualities_above_high_with_effort() -> None:
    assert output_image_tokens(512, 512, "medium") == 264  # a quarter of 1056
    assert output_image_tokens(1024, 1024, "xhigh") == 6240
    assert output_image_tokens(1024, 1024, "max") == 8320


def test_usage_adds_up() -> None:
    usage = usage_for(text_tokens=7, image_tokens_in=0, images_out=3, width=1024,
                      height=1024, quality="low")

    assert usage.input_tokens == usage.input_tokens_details.text_tokens == 7
    assert usage.output_tokens == usage.output_tokens_details.image_tokens == 3 * 272
    assert usage.total_tokens == 7 + 3 * 272

"""The GPT-image fields and names: accepted where OpenAI accepts them, refused as it does."""

from __future__ import annotations

import typing

import pytest
from openai.types.image_model import ImageModel

from diffuserve.protocol.rules import (
    DALL_E_2,
    DALL_E_3,
    GENERIC,
    GPT_IMAGE_1,
    GPT_IMAGE_2,
    GPT_IMAGE_2_5,
    RULES_BY_NAME,
)
from diffuserve.protocol.sizes import AUTO, Size
from diffuserve.service.planning import drawn_size
from tests.support.validation import rejection, validate


def test_every_name_of_the_sdks_image_model_has_openais_rules() -> None:
    assert set(typing.get_args(ImageModel)) == set(RULES_BY_NAME)
    assert RULES_BY_NAME["gpt-image-2.5-flare-2026-09-08"] is GPT_IMAGE_2_5
    assert RULES_BY_NAME["chatgpt-image-latest"] is GPT_IMAGE_1


def test_gpt_image_defaults() -> None:
    request = validate(GPT_IMAGE_2)

    options = request.options
    assert (options.output_format, options.output_compression) == ("png", 100)
    assert (options.background, options.resolved_background) == ("auto", "opaque")
    assert (options.moderation, options.stream, options.partial_images) == ("auto", False, 0)
    assert (request.size, drawn_size(request)) == (AUTO, Size(1024, 1024))
    assert request.gpt_image and request.response_format == "b64_json"


def test_gpt_image_options_are_carried() -> None:
    request = validate(GPT_IMAGE_1, output_format="webp", output_compression=40,
                       background="transparent", moderation="low", complexity="high",
                       safety_identifier="hash-of-user", user="someone")

    options = request.options
    assert (options.output_format, options.output_compression) == ("webp", 40)
    assert options.content_type == "image/webp"
    assert options.resolved_background == "transparent"
    assert (options.moderation, options.complexity) == ("low", "high")
    # The safety identifier wins over the deprecated user.
    assert request.end_user == "hash-of-user"
    assert validate(GPT_IMAGE_1, user="someone").end_user == "someone"


@pytest.mark.parametrize("rules", [DALL_E_2, DALL_E_3], ids=["dall-e-2", "dall-e-3"])
@pytest.mark.parametrize("field, value", [
    ("output_format", "png"), ("background", "opaque"), ("moderation", "low"),
    ("output_compression", 50), ("stream", False), ("partial_images", 0),
])
def test_dall_e_names_take_none_of_the_gpt_image_fields(rules: object, field: str,
                                                       value: object) -> None:
    error = rejection(rules, **{field: value})  # type: ignore[arg-type]

    assert (error.param, error.code) == (field, "unknown_parameter")


def test_custom_model_names_take_the_gpt_image_fields() -> None:
    assert validate(GENERIC, output_format="jpeg").options.output_format == "jpeg"
    assert not validate(GENERIC).gpt_image


@pytest.mark.parametrize("output_format", ["gif", "svg"])
def test_formats_no_model_draws_honestly_are_refused_naming_the_model(
    output_format: str,
) -> None:
    error = rejection(GPT_IMAGE_2, output_format=output_format)

    assert (error.param, error.code) == ("output_format", "unsupported_value")
    assert "'some-model'" in error.message


@pytest.mark.parametrize("fields, param, code", [
    ({"output_format": "bmp"}, "output_format", "invalid_value"),
    ({"output_format": "jpeg", "output_compression": 101}, "output_compression",
     "integer_above_max_value"),
    ({"output_format": "webp", "output_compression": -1}, "output_compression",
     "integer_below_min_value"),
    ({"output_compression": 50}, "output_compression", "invalid_value"),  # png
    ({"background": "transparent", "output_format": "jpeg"}, "background", "invalid_value"),
    ({"background": "clear"}, "background", "invalid_value"),
    ({"moderation": "high"}, "moderation", "invalid_value"),
    ({"complexity": "extreme"}, "complexity", "invalid_value"),
    ({"partial_images": 4, "stream": True}, "partial_images", "integer_above_max_value"),
    ({"partial_images": 2}, "partial_images", "invalid_value"),  # without stream
    ({"frame_count": 4}, "frame_count", "invalid_value"),
    ({"frame_duration_ms": 100}, "frame_duration_ms", "invalid_value"),
    ({"svg": {"model": "x"}}, "svg", "invalid_value"),
    ({"safety_identifier": "x" * 257}, "safety_identifier", "string_above_max_length"),
])
def test_bad_gpt_image_options_are_400s_naming_the_field(fields: dict[str, object],
                                                        param: str, code: str) -> None:
    error = rejection(GPT_IMAGE_2, **fields)

    assert (error.param, error.code) == (param, code)


@pytest.mark.parametrize("size", ["1280x720", "3840x2160", "2160x3840", "3840x1280",
                                  "512x512", "16x48", "auto"])
def test_gpt_image_2_takes_any_size_within_openais_limits(size: str) -> None:
    request = validate(GPT_IMAGE_2, size=size)

    assert str(request.size) == size


@pytest.mark.parametrize("size", ["1000x1000", "1024x1000", "4096x1024", "3856x2160",
                                  "3840x2176", "4000x16", "16x64"])
def test_gpt_image_2_refuses_sizes_outside_the_limits(size: str) -> None:
    error = rejection(GPT_IMAGE_2, size=size)

    assert (error.param, error.code) == ("size", "invalid_size")
    assert "multiples of 16" in error.message


def test_gpt_image_1_keeps_its_three_sizes() -> None:
    assert rejection(GPT_IMAGE_1, size="1280x720").code == "invalid_size"


def test_only_the_2_5_models_take_xhigh_and_max() -> None:
    assert validate(GPT_IMAGE_2_5, quality="max").quality == "max"
    assert rejection(GPT_IMAGE_2, quality="xhigh").param == "quality"


def test_every_name_checks_the_safety_identifier() -> None:
    assert rejection(DALL_E_2, safety_identifier="x" * 257).param == "safety_identifier"
    assert validate(DALL_E_3, safety_identifier="abc", user="u").end_user == "abc"

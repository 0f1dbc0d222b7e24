"""Edit and variation bodies: multipart strings coerced, uploads checked as OpenAI does."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.rules import rules_for
from diffuserve.protocol.uploads import Upload
from tests.support.edit_bodies import parse_edit_form, parse_edit_json, parse_variation_form
from tests.support.uploads import mask_png, png


def refused(form: dict[str, list[Any]], model_default: str = "dall-e-2") -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse_edit_form(form, model_default)
    return caught.value


def test_a_gpt_image_edit_with_a_mask() -> None:
    edit = parse_edit_form({"image": [png()], "mask": [mask_png()], "prompt": ["a hat"],
                            "model": ["gpt-image-2"], "n": ["2"], "stream": ["false"],
                            "output_format": ["webp"], "input_fidelity": ["high"]}, "dall-e-2")

    assert (edit.request.n, edit.request.options.output_format) == (2, "webp")
    assert edit.input_fidelity == "high" and edit.input_size == (64, 64)
    # OpenAI's mask (clear = edit) became diffusers' (white = redraw).
    assert edit.mask.getpixel((10, 5)) == 255 and edit.mask.getpixel((10, 60)) == 0


def test_without_a_mask_a_transparent_image_masks_itself() -> None:
    image = Image.new("RGBA", (64, 64), (200, 30, 30, 255))
    image.paste((0, 0, 0, 0), (0, 0, 32, 64))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    edit = parse_edit_form({"image": [Upload("a.png", "image/png", buffer.getvalue())],
                            "prompt": ["x"]}, "dall-e-2")

    assert edit.mask.getpixel((5, 5)) == 255 and edit.mask.getpixel((50, 5)) == 0
    assert edit.images[0].mode == "RGB"


@pytest.mark.parametrize("form, param, code", [
    ({"image": ["not a file"], "prompt": ["x"]}, "image", "invalid_type"),
    ({"image[]": [png(), "text"], "prompt": ["x"], "model": ["gpt-image-2"]}, "image[1]",
     "invalid_type"),
    ({"image": [png()], "prompt": ["x"], "n": ["two"]}, "n", "invalid_type"),
    ({"image": [png()], "prompt": ["x"], "model": ["gpt-image-2"], "stream": ["yes"]},
     "stream", "invalid_type"),
    ({"image": [png()], "prompt": ["x"], "style": ["vivid"]}, "style", "unknown_parameter"),
    ({"image": [png()]}, "prompt", "missing_required_parameter"),
    ({"prompt": ["x"]}, "image", "missing_required_parameter"),
    ({"image": [png((64, 32))], "prompt": ["x"]}, "image", "invalid_image_size"),
    ({"image": [png(fmt="WEBP")], "prompt": ["x"]}, "image", "invalid_image_format"),
    ({"image": [Upload("a.png", "image/png", b"\x89PNG garbage")], "prompt": ["x"]}, "image",
     "invalid_image"),
    ({"image": [Upload("a.png", "image/png", b"x" * (4 << 20))], "prompt": ["x"]}, "image",
     "image_too_large"),
    ({"image": [png()], "mask": [mask_png((32, 32))], "prompt": ["x"]}, "mask",
     "invalid_mask_size"),
    ({"image": [png()], "mask": [png()], "prompt": ["x"]}, "mask", "invalid_mask"),
    ({"image": [png()], "prompt": ["x"], "input_fidelity": ["high"]}, "input_fidelity",
     "unknown_parameter"),  # dall-e-2
    ({"image[]": [png()] * 17, "prompt": ["x"], "model": ["gpt-image-2"]}, "image",
     "too_many_images"),
    ({"image": [png()], "prompt": ["x"], "model": ["dall-e-3"]}, "model", "invalid_value"),
])
def test_malformed_edits_are_400s_naming_the_field(form: dict[str, list[Any]], param: str,
                                                   code: str) -> None:
    error = refused(form)

    assert (error.param, error.code) == (param, code)


def test_gpt_image_names_take_webp_and_jpeg_and_non_square_images() -> None:
    for fmt in ("WEBP", "JPEG"):
        edit = parse_edit_form({"image": [png((96, 64), fmt=fmt)], "prompt": ["x"],
                                "model": ["gpt-image-1.5"]}, "dall-e-2")
        assert edit.input_size == (96, 64)


def test_the_json_form_takes_data_urls_and_refuses_remote_ones() -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png().data).decode()
    edit = parse_edit_json({"images": [{"image_url": data_url}], "prompt": "x",
                            "model": "gpt-image-2", "moderation": "low"}, "dall-e-2")
    assert edit.request.options.moderation == "low"

    with pytest.raises(InvalidRequestError) as caught:
        parse_edit_json({"images": [{"image_url": "https://example.com/a.png"}],
                         "prompt": "x", "model": "gpt-image-2"}, "dall-e-2")
    assert caught.value.code == "invalid_image_url"
    with pytest.raises(InvalidRequestError) as caught:
        parse_edit_json({"images": [{"file_id": "file-1"}], "prompt": "x"}, "dall-e-2")
    assert caught.value.param == "images[0]"


def test_variations_take_no_prompt() -> None:
    variation = parse_variation_form({"image": [png()], "n": ["3"]}, "dall-e-2")
    assert variation.request.n == 3

    with pytest.raises(InvalidRequestError) as caught:
        parse_variation_form({"image": [png()], "prompt": ["x"]}, "dall-e-2")
    assert (caught.value.param, caught.value.code) == ("prompt", "unknown_parameter")


def markup_png(size: tuple[int, int] = (64, 64), clear: bool = True) -> Upload:
    """Blue strokes over the left half; the rest clear (or, with ``clear`` false, white)."""
    image = Image.new("RGBA", size, (0, 0, 0, 0) if clear else (255, 255, 255, 255))
    image.paste((20, 40, 220, 255), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Upload("markup.png", "image/png", buffer.getvalue())


def test_a_markup_is_drawn_over_the_image_to_guide_the_edit() -> None:
    edit = parse_edit_form({"image": [png()], "markup": [markup_png()], "prompt": ["x"],
                            "model": ["gpt-image-2.5-flare"]}, "dall-e-2")

    assert edit.images[0].getpixel((10, 10)) == (20, 40, 220)  # the markup
    assert edit.images[0].getpixel((50, 10)) == (200, 30, 30)  # the image shows through
    assert edit.mask is None  # an image-to-image edit of the two together


@pytest.mark.parametrize("form, code", [
    ({"mask": [mask_png()], "markup": [markup_png()]}, "invalid_value"),
    ({"markup": [markup_png((32, 32))]}, "invalid_image_size"),
    ({"markup": [markup_png(clear=False)]}, "invalid_value"),
])
def test_a_markup_must_be_alone_the_same_size_and_transparent(form: dict[str, list[Any]],
                                                             code: str) -> None:
    error = refused({"image": [png()], "prompt": ["x"], "model": ["gpt-image-2"], **form})

    assert (error.param, error.code) == ("markup", code)


def test_dall_e_2_takes_no_markup() -> None:
    error = refused({"image": [png()], "prompt": ["x"], "markup": [markup_png()]})

    assert (error.param, error.code) == ("markup", "unknown_parameter")


# --- the fields openai-python 3.63 sends on edits, as generations take them -------------


def generation_error(model: str, fields: dict[str, Any]) -> InvalidRequestError:
    body = ImageGenerationRequest.model_validate({"prompt": "x", "model": model, **fields})
    with pytest.raises(InvalidRequestError) as caught:
        rules_for(model).validate(body, model)
    return caught.value


def data_url(upload: Upload | None = None) -> str:
    return "data:image/png;base64," + base64.b64encode((upload or png()).data).decode()


#: Each case as JSON (generations, JSON edits) and as openai-python's multipart parts.
GIF_AND_SVG_FIELDS = [
    ({"frame_count": 4}, {"frame_count": ["4"]}),
    ({"frame_duration_ms": 100}, {"frame_duration_ms": ["100"]}),
    ({"svg": {"model": "m", "reasoning": {"effort": "high"}}},
     {"svg[model]": ["m"], "svg[reasoning][effort]": ["high"]}),
    ({"output_format": "svg", "svg": {"model": "m"}},
     {"output_format": ["svg"], "svg[model]": ["m"]}),
    ({"output_format": "gif", "frame_count": 4}, {"output_format": ["gif"], "frame_count": ["4"]}),
    ({"complexity": "extreme"}, {"complexity": ["extreme"]}),
]


@pytest.mark.parametrize("model", ["gpt-image-2", "dall-e-2"])
@pytest.mark.parametrize("as_json, as_form", GIF_AND_SVG_FIELDS)
def test_gif_svg_and_complexity_fields_get_on_edits_the_400_generations_give(
    model: str, as_json: dict[str, Any], as_form: dict[str, list[str]]
) -> None:
    expected = generation_error(model, as_json)

    from_form = refused({"image": [png()], "prompt": ["x"], "model": [model], **as_form})
    with pytest.raises(InvalidRequestError) as caught:
        parse_edit_json({"images": [data_url()], "prompt": "x", "model": model, **as_json},
                        "dall-e-2")
    for error in (from_form, caught.value):
        assert (error.message, error.param, error.code) == (
            expected.message, expected.param, expected.code)


def test_edits_take_complexity_as_generations_do() -> None:
    edit = parse_edit_form({"image": [png()], "prompt": ["x"], "model": ["gpt-image-2"],
                            "complexity": ["high"]}, "dall-e-2")

    assert edit.request.options.complexity == "high"


@pytest.mark.parametrize("form", [
    {"svg": ["m"]},  # an object sent as one string
    {"svg[reasoning]": ["x"], "svg[reasoning][effort]": ["high"]},  # a value and an object
])
def test_an_svg_that_is_not_an_object_is_invalid_type(form: dict[str, list[str]]) -> None:
    error = refused({"image": [png()], "prompt": ["x"], "model": ["gpt-image-2"], **form})

    assert (error.param, error.code) == ("svg", "invalid_type")


def test_bracketed_names_of_other_fields_are_unknown() -> None:
    error = refused({"image": [png()], "prompt": ["x"], "model": ["gpt-image-2"],
                     "size[width]": ["64"]})

    assert (error.param, error.code) == ("size[width]", "unknown_parameter")


@pytest.mark.parametrize("images", [
    {"images": [data_url()]},  # bare data URLs in the list
    {"image": data_url()},  # one image as a string
    {"image": {"image_url": data_url()}},  # one image as the spec's object
])
def test_json_edits_take_the_unambiguous_shapes_clients_send(images: dict[str, Any]) -> None:
    edit = parse_edit_json({**images, "mask": data_url(mask_png()), "prompt": "x",
                            "model": "gpt-image-2"}, "dall-e-2")

    assert edit.input_size == (64, 64) and edit.mask is not None


@pytest.mark.parametrize("images, param, code", [
    ({"images": [data_url()], "image": data_url()}, "image", "invalid_value"),
    ({"images": data_url()}, "images", "invalid_type"),
    ({"images": [42]}, "images[0]", "invalid_type"),
    ({"image": [data_url()]}, "image", "invalid_type"),
    ({"images": []}, "images", "missing_required_parameter"),
])
def test_other_json_image_shapes_are_400s_showing_the_expected_one(
    images: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_edit_json({**images, "prompt": "x", "model": "gpt-image-2"}, "dall-e-2")

    assert (caught.value.param, caught.value.code) == (param, code)
    if code == "invalid_type":
        assert '{"image_url": "data:image/png;base64,..."}' in caught.value.message

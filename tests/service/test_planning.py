"""Planning: a request's model, rules and knobs become exactly what will be drawn."""

from __future__ import annotations

import pytest
from PIL import Image

from diffuserve.config import ModelSpec, Settings
from diffuserve.engine.types import ModelDefaults
from diffuserve.protocol.edits import EditRequest
from diffuserve.protocol.errors import InvalidRequestError, ModelNotFoundError
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.rules import rules_for
from diffuserve.service.catalog import ModelCatalog
from diffuserve.service.planning import (
    check_edit_images,
    guidance_for,
    hd_steps,
    plan_edit,
    plan_generation,
    steps_for,
)

SPEC = ModelSpec(name="m", source="org/m", steps=20, hd_steps=36, guidance_scale=4.0,
                 vivid_guidance_scale=5.0, natural_guidance_scale=3.0, negative_prompt="ugly")
CATALOG = ModelCatalog.from_settings(Settings(models=(SPEC,)))


def plan(**body: object):  # type: ignore[no-untyped-def]
    return plan_generation(CATALOG, ImageGenerationRequest(**body))  # type: ignore[arg-type]


@pytest.mark.parametrize(("steps", "hd"), [(30, 48), (10, 16), (2, 3), (1, 2)])
def test_hd_draws_more_steps_than_standard(steps: int, hd: int) -> None:
    assert hd_steps(ModelSpec(name="m", source="org/m", steps=steps)) == hd


def test_configured_hd_steps_win() -> None:
    assert hd_steps(ModelSpec(name="m", source="org/m", steps=30, hd_steps=40)) == 40


@pytest.mark.parametrize(
    ("style", "guidance"), [("vivid", 9.0), ("natural", 5.0), (None, 7.5)]
)
def test_guidance_follows_the_style(style: str | None, guidance: float) -> None:
    spec = ModelSpec(
        name="m",
        source="org/m",
        guidance_scale=7.5,
        vivid_guidance_scale=9.0,
        natural_guidance_scale=5.0,
    )

    assert guidance_for(spec, style) == guidance


@pytest.mark.parametrize("style", ["vivid", "natural", None])
def test_style_without_its_own_guidance_uses_the_base_guidance(style: str | None) -> None:
    assert guidance_for(ModelSpec(name="m", source="org/m", guidance_scale=6.0), style) == 6.0


@pytest.mark.parametrize(("quality", "steps"), [
    ("standard", 20), ("hd", 36), ("low", 10), ("medium", 20), ("auto", 20), ("high", 36)])
def test_quality_picks_the_models_steps(quality: str, steps: int) -> None:
    assert steps_for(SPEC, quality) == steps


UNSET = ModelSpec(name="u", source="org/u")  # steps and guidance: the model's own
SCHNELL = ModelDefaults(steps=4, guidance_scale=0.0, hd_steps=4)
DEV = ModelDefaults(steps=28, guidance_scale=3.5)


@pytest.mark.parametrize(("defaults", "quality", "steps"), [
    (SCHNELL, "standard", 4), (SCHNELL, "hd", 4), (SCHNELL, "low", 2),
    (DEV, "standard", 28), (DEV, "hd", 45), (DEV, "max", 68),
    (None, "standard", 30), (None, "hd", 48)])  # none of its own: 30, as before
def test_a_spec_without_steps_draws_the_models_own(
        defaults: ModelDefaults | None, quality: str, steps: int) -> None:
    assert steps_for(UNSET, quality, defaults=defaults) == steps


@pytest.mark.parametrize(("defaults", "guidance"), [(SCHNELL, 0.0), (DEV, 3.5), (None, 7.5)])
def test_a_spec_without_guidance_guides_as_the_model_does(
        defaults: ModelDefaults | None, guidance: float) -> None:
    assert guidance_for(UNSET, None, defaults) == guidance
    assert guidance_for(UNSET.model_copy(update={"vivid_guidance_scale": 5.0}), "vivid",
                        defaults) == 5.0


def test_what_the_models_file_sets_wins_over_the_models_own() -> None:
    assert (steps_for(SPEC, "standard", defaults=SCHNELL), steps_for(SPEC, "hd",
            defaults=SCHNELL), guidance_for(SPEC, None, SCHNELL)) == (20, 36, 4.0)
    # Steps set without hd_steps: hd follows the steps set, not the model's own hd.
    two = UNSET.model_copy(update={"steps": 2})
    assert steps_for(two, "hd", defaults=SCHNELL) == 3


FLOORED = ModelSpec(name="f", source="org/f", steps=8, hd_steps=16, min_steps=7)


@pytest.mark.parametrize(("quality", "complexity", "steps"), [
    ("low", None, 7), ("low", "low", 7), ("low", "high", 7), ("medium", "low", 7),
    ("medium", None, 8), ("medium", "high", 10), ("high", "low", 12), ("max", None, 24)])
def test_no_quality_or_complexity_draws_fewer_steps_than_the_models_floor(
        quality: str, complexity: str | None, steps: int) -> None:
    assert steps_for(FLOORED, quality, complexity) == steps
    # Without a floor, low quality is half the standard steps, as before.
    assert steps_for(FLOORED.model_copy(update={"min_steps": None}), "low") == 4


def test_a_requests_own_step_count_is_drawn_as_asked_even_below_the_floor() -> None:
    catalog = ModelCatalog.from_settings(Settings(models=(FLOORED,)))
    planned = plan_generation(catalog, ImageGenerationRequest(  # type: ignore[call-arg]
        model="gpt-image-1", prompt="a", quality="low", num_inference_steps=3))
    assert planned.params.num_inference_steps == 3
    assert plan_generation(catalog, ImageGenerationRequest(  # type: ignore[call-arg]
        model="gpt-image-1", prompt="a", quality="low")).params.num_inference_steps == 7


def test_the_built_in_model_draws_every_quality_at_its_floor_or_more() -> None:
    from diffuserve.builtin import builtin_spec

    spec = builtin_spec()
    assert spec.min_steps is not None and spec.min_steps <= spec.steps
    for quality in ("low", "medium", "auto", "standard", "hd", "high", "xhigh", "max"):
        for complexity in (None, "low", "medium", "high"):
            assert steps_for(spec, quality, complexity) >= spec.min_steps


def test_a_dall_e_3_plan_uses_style_guidance_hd_steps_and_a_revised_prompt() -> None:
    planned = plan(model="dall-e-3", prompt="a lighthouse", quality="hd", style="natural",
                   seed=5)

    assert planned.spec is SPEC
    assert planned.params.num_inference_steps == 36
    assert planned.params.guidance_scale == 3.0
    assert planned.params.seeds == (5,)
    assert planned.params.negative_prompt == "ugly"
    assert planned.revised_prompt is not None
    assert planned.params.prompt == planned.revised_prompt


def test_extensions_beat_the_models_knobs() -> None:
    planned = plan(model="dall-e-2", prompt="a", n=3, seed=7, num_inference_steps=4,
                   guidance_scale=1.5, negative_prompt="blurry")

    assert planned.images == 3
    assert planned.params.seeds == (7, 8, 9)
    assert (planned.params.num_inference_steps, planned.params.guidance_scale) == (4, 1.5)
    assert planned.params.negative_prompt == "blurry"
    assert planned.revised_prompt is None


@pytest.mark.parametrize("n", [-1000, 0, 11])
def test_planning_refuses_a_bad_n_before_anything_else_happens(n: int) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        plan(model="dall-e-2", prompt="a", n=n)
    assert caught.value.param == "n"


def test_planning_refuses_an_unknown_model() -> None:
    with pytest.raises(ModelNotFoundError):
        plan(model="nope", prompt="a")


# --- edits of several images ------------------------------------------------------------


def an_edit(*colours: tuple[int, int, int], fidelity: str = "low") -> EditRequest:
    request = rules_for("gpt-image-1").validate(
        ImageGenerationRequest(prompt="together", model="gpt-image-1"), "gpt-image-1")
    images = tuple(Image.new("RGB", (64 * (index + 1), 64), colour)
                   for index, colour in enumerate(colours))
    return EditRequest(request=request, images=images, mask=Image.new("L", (64, 64), 255),
                       input_fidelity=fidelity, input_size=images[0].size)


def test_an_edit_draws_the_first_image_with_the_others_as_references() -> None:
    plan = plan_edit(CATALOG, an_edit((1, 0, 0), (2, 0, 0), (3, 0, 0)))

    assert plan.params.image is not None and plan.params.image.getpixel((0, 0)) == (1, 0, 0)
    assert [image.getpixel((0, 0)) for image in plan.params.references] == [(2, 0, 0),
                                                                           (3, 0, 0)]
    assert plan.params.mask is not None  # the mask goes with the first image
    assert plan.input_image_tokens == 3 * 85


def test_one_image_has_no_references() -> None:
    assert plan_edit(CATALOG, an_edit((1, 0, 0))).params.references == ()


@pytest.mark.parametrize(("images", "limit"), [(1, 1), (3, 3), (16, None)])
def test_an_edit_within_the_served_models_limit_is_planned(images: int,
                                                          limit: int | None) -> None:
    assert check_edit_images(CATALOG, an_edit((0, 0, 0)).request, images, limit) is SPEC


@pytest.mark.parametrize(("images", "limit", "words"), [
    (2, 1, "The model 'm' edits one image at a time; 2 were sent. Send one image."),
    (4, 3, "The model 'm' takes at most 3 images in one edit; 4 were sent. Send at most 3."),
])
def test_more_images_than_the_served_model_takes_are_refused(images: int, limit: int,
                                                             words: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        check_edit_images(CATALOG, an_edit((0, 0, 0)).request, images, limit)

    assert (refused.value.param, refused.value.code) == ("image", "too_many_images")
    assert refused.value.message == words

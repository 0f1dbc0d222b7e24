"""Every model family through the diffusers backend, each loaded from its saved folder as
the server loads it (processors that need torchvision included): generation at a size
that is not square, ``n`` images in one call, partial images while drawing, the edits
each family's pipelines can do, and UnsupportedTask for those they cannot.

The tiny pipelines are those of ``tests/support/tiny_families.py``; each draws at
exactly 96x64 here (``resolution = 80``: the native area in that aspect) in two steps.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.diffusers import DiffusersBackend
from diffuserve.engine.backends.diffusers import backend as backend_module
from diffuserve.engine.backends.diffusers.calling import accepted_arguments
from diffuserve.engine.backends.diffusers.families import Family, family_of
from diffuserve.engine.backends.diffusers.families.flux import Flux1
from diffuserve.engine.backends.diffusers.previews import Previews
from diffuserve.engine.errors import Draining, UnsupportedTask
from diffuserve.engine.local.engine import LocalEngine
from diffuserve.engine.types import GenerationParams, ModelDefaults, Preview, Task, TaskKind
from tests.support.small_qwen_edits import cap_qwen_edit_area
from tests.support.tiny_families import FAMILIES
from tests.support.tiny_tokenizers import has_torchvision

WIDTH, HEIGHT = 96, 64  # not square, so a swapped width and height shows
RESOLUTION = 80  # 96x64 is 80² in that aspect: drawn at exactly the size asked


@dataclass(frozen=True)
class Expected:
    """What a family's backend does: its adapter, whether it generates, the pipeline
    that draws a masked edit and one without a mask (None: refused), its image limit."""

    family: str
    generates: bool
    masked: str
    unmasked: str | None
    max_images: int


EXPECTED: dict[str, Expected] = {
    "flux1-dev": Expected("flux1", True, "FluxInpaintPipeline", "FluxImg2ImgPipeline", 1),
    "flux1-schnell": Expected("flux1", True, "FluxInpaintPipeline", "FluxImg2ImgPipeline", 1),
    "flux1-fill": Expected("flux1-fill", False, "FluxFillPipeline", None, 1),
    "flux1-kontext": Expected("flux1-kontext", True, "FluxKontextInpaintPipeline",
                              "FluxKontextPipeline", 1),
    "flux2-dev": Expected("flux2", True, "Flux2Pipeline", "Flux2Pipeline", 10),
    "flux2-klein": Expected("flux2-klein", True, "Flux2KleinInpaintPipeline",
                            "Flux2KleinPipeline", 10),
    "flux2-klein-base": Expected("flux2-klein", True, "Flux2KleinInpaintPipeline",
                                 "Flux2KleinPipeline", 10),
    "sd35": Expected("sd3", True, "StableDiffusion3InpaintPipeline",
                     "StableDiffusion3Img2ImgPipeline", 1),
    "qwen-image": Expected("qwen-image", True, "QwenImageInpaintPipeline",
                           "QwenImageImg2ImgPipeline", 1),
    "qwen-image-edit": Expected("qwen-image-edit", False, "QwenImageEditInpaintPipeline",
                                "QwenImageEditPipeline", 1),
    "qwen-image-edit-plus": Expected("qwen-image-edit-plus", False,
                                     "QwenImageEditPlusPipeline",
                                     "QwenImageEditPlusPipeline", 3),
    "z-image": Expected("z-image", True, "ZImageInpaintPipeline", "ZImageImg2ImgPipeline", 1),
}
NAMES = list(EXPECTED)
GENERATING = [name for name in NAMES if EXPECTED[name].generates]
MULTI_REFERENCE = [name for name in NAMES if EXPECTED[name].max_images > 1]


def params(**overrides: object) -> GenerationParams:
    values: dict[str, object] = {
        "prompt": "a red fox in the snow", "negative_prompt": None, "width": WIDTH,
        "height": HEIGHT, "num_inference_steps": 2, "guidance_scale": 3.5, "seeds": (1,),
    }
    values.update(overrides)
    return GenerationParams(**values)  # type: ignore[arg-type]


def start_image(shade: int = 40) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (200, shade, 40))
    image.paste((30, 30, 200), (0, 0, WIDTH // 2, HEIGHT // 2))
    return image


def mask() -> Image.Image:
    drawn = Image.new("L", (WIDTH, HEIGHT), 0)
    drawn.paste(255, (32, 16, 64, 48))
    return drawn


@pytest.fixture(autouse=True)
def small_qwen_edit_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Qwen-Image-Edit's pipelines resize every input image to about 1 MP (and its
    inpainting draws there) whatever size is asked: here, to 96x64, or each edit would
    take half a minute on a CPU. What the backend passes them is unchanged."""
    cap_qwen_edit_area(WIDTH * HEIGHT, monkeypatch.setattr)



@pytest.fixture(scope="module")
def served(family_folder: Callable[[str], Path]) -> Callable[[str], DiffusersBackend]:
    """Family ``name`` loaded by the backend from its folder, once per module."""
    loaded: dict[str, DiffusersBackend] = {}

    def backend(name: str) -> DiffusersBackend:
        if name not in loaded:
            spec = ModelSpec(name=name, source=str(family_folder(name)),
                             resolution=RESOLUTION, max_batch_size=2)
            loaded[name] = DiffusersBackend(spec)
            loaded[name].load()
        return loaded[name]

    return backend


@dataclass(frozen=True)
class Call:
    pipeline: str
    kwargs: dict[str, Any]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Call]]:
    """Every pipeline call the backend makes: the pipeline's class and the arguments it
    is given."""
    made: list[Call] = []
    real = backend_module.call_pipeline

    def recorded(pipeline: Any, scheduler: Any,
                 kwargs: dict[str, Any]) -> list[Image.Image | None]:
        # Copies: a pipeline may rewrite a list it is given (Z-Image: its prompts).
        taken = accepted_arguments(pipeline, kwargs)
        made.append(Call(type(pipeline).__name__, {
            key: list(value) if isinstance(value, list) else value
            for key, value in taken.items()}))
        return real(pipeline, scheduler, kwargs)

    monkeypatch.setattr(backend_module, "call_pipeline", recorded)
    yield made


def assert_sized(images: list[Image.Image], count: int) -> None:
    assert [(image.size, image.mode) for image in images] == [((WIDTH, HEIGHT), "RGB")] * count


def test_every_family_is_served_here() -> None:
    assert set(EXPECTED) == set(FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_each_family_says_what_it_can_do(
        name: str, served: Callable[[str], DiffusersBackend]) -> None:
    backend, expected = served(name), EXPECTED[name]
    assert backend.describe()["family"] == expected.family
    tasks = {TaskKind.EDIT}
    if expected.generates:
        tasks.add(TaskKind.GENERATE)
    if expected.unmasked is not None:
        tasks.add(TaskKind.VARIATION)
    assert backend.tasks == frozenset(tasks)
    assert backend.max_input_images == expected.max_images
    assert backend.max_prompt_tokens is not None and backend.max_prompt_tokens > 0
    if not expected.generates:
        with pytest.raises(UnsupportedTask, match="generate"):
            backend.generate(params())


#: Steps and guidance each family's model card gives (FLUX.1 [schnell], FLUX.2 [klein]
#: and Z-Image-Turbo are step-distilled: hd draws as many steps).
MODEL_CARD_DEFAULTS: dict[str, ModelDefaults] = {
    "flux1-dev": ModelDefaults(28, 3.5),
    "flux1-schnell": ModelDefaults(4, 0.0, hd_steps=4),
    "flux1-fill": ModelDefaults(50, 30.0),
    "flux1-kontext": ModelDefaults(28, 2.5),
    "flux2-dev": ModelDefaults(50, 4.0),
    "flux2-klein": ModelDefaults(4, 1.0, hd_steps=4),
    "flux2-klein-base": ModelDefaults(50, 4.0),
    "sd35": ModelDefaults(40, 4.5),  # the tiny one is built as SD 3.5 Medium (MMDiT-X)
    "qwen-image": ModelDefaults(50, 4.0),
    "qwen-image-edit": ModelDefaults(50, 4.0),
    "qwen-image-edit-plus": ModelDefaults(40, 4.0),
    "z-image": ModelDefaults(9, 0.0, hd_steps=9),
}


@pytest.mark.parametrize("name", NAMES)
def test_each_family_reports_the_steps_and_guidance_of_its_model_card(
        name: str, served: Callable[[str], DiffusersBackend]) -> None:
    assert served(name).defaults == MODEL_CARD_DEFAULTS[name]


def test_a_pipeline_of_no_listed_family_reports_no_defaults_of_its_own(
        tiny_models: dict[str, Path]) -> None:
    """SD 1.x, SDXL, the built-in model: the service's 30 steps at 7.5, as before."""
    backend = DiffusersBackend(ModelSpec(name="sd", source=str(tiny_models["sd"]),
                                         resolution=64))
    backend.load()
    assert backend.defaults is None


def test_schnell_and_klein_draw_without_guidance(
        served: Callable[[str], DiffusersBackend]) -> None:
    assert [served(name).describe()["guidance"] for name in (
        "flux1-dev", "flux1-schnell", "flux2-klein", "flux2-klein-base")] == [
        "distilled", "none", "none", "cfg"]


def masked(request: GenerationParams) -> GenerationParams:
    return replace(request, mask=mask())


#: What each model cannot draw, refused by ``check`` before it is queued, and the words
#: of the refusal.
REFUSED: list[tuple[str, GenerationParams, str]] = [
    ("flux1-fill", params(), "generate tasks"),
    ("flux1-fill", params(image=start_image()), "edits without a mask"),
    ("qwen-image-edit", params(), "generate tasks"),
    ("sd35", params(image=start_image(), references=(start_image(),)),
     "edits of more than 1 image"),
    ("flux2-klein", params(image=start_image(), mask=mask(),
                           references=(start_image(),) * 10), "masked edits of more than 10"),
    ("flux1-dev", params(negative_prompt="blurry"), "negative prompt (FLUX.1"),
    ("flux2-klein", params(negative_prompt="blurry"), "negative prompt (FLUX.2"),
    ("z-image", params(negative_prompt="blurry", guidance_scale=0.0),
     "only at guidance_scale above 0"),
    ("sd35", params(negative_prompt="blurry", guidance_scale=1.0),
     "only at guidance_scale above 1"),
]


@pytest.mark.parametrize(("name", "request_", "words"), REFUSED,
                         ids=[f"{name}-{words}" for name, _, words in REFUSED])
def test_what_a_model_cannot_draw_is_refused_by_its_check(
        name: str, request_: GenerationParams, words: str,
        served: Callable[[str], DiffusersBackend]) -> None:
    with pytest.raises(UnsupportedTask, match=re.escape(words)) as refused:
        served(name).check(request_)
    assert refused.value.field == ("negative_prompt" if request_.negative_prompt else None)


@pytest.mark.parametrize(("name", "request_"), [
    ("flux1-fill", params(image=start_image(), mask=mask())),
    ("flux2-klein", params(image=start_image(), references=(start_image(),) * 9)),
    ("qwen-image-edit-plus", params(image=start_image(), references=(start_image(),) * 2)),
    ("sd35", params(negative_prompt="blurry", guidance_scale=4.0)),
    ("z-image", params(negative_prompt="blurry", guidance_scale=2.0)),
    ("qwen-image", params(negative_prompt="blurry", guidance_scale=4.0)),
])
def test_what_a_model_can_draw_passes_its_check(
        name: str, request_: GenerationParams,
        served: Callable[[str], DiffusersBackend]) -> None:
    served(name).check(request_)


def test_the_models_files_own_negative_prompt_is_not_refused_but_logged(
        family_folder: Callable[[str], Path], calls: list[Call],
        caplog: pytest.LogCaptureFixture) -> None:
    spec = ModelSpec(name="schnell", source=str(family_folder("flux1-schnell")),
                     resolution=RESOLUTION, negative_prompt="blurry")
    backend = DiffusersBackend(spec)
    backend.load()
    request = params(negative_prompt="blurry")
    backend.check(request)
    with caplog.at_level(logging.INFO, logger="diffuserve.engine.backends.diffusers"):
        assert_sized(backend.generate(request), 1)
    assert "negative prompt not used" in caplog.text
    (call,) = calls
    assert "negative_prompt" not in call.kwargs


def test_an_edit_a_model_cannot_draw_is_refused_before_it_is_queued(
        served: Callable[[str], DiffusersBackend], calls: list[Call]) -> None:
    """An unmasked edit sent to FLUX.1 Fill: refused at submit, while the engine drains
    (a task that reached the queue would be refused as Draining), nothing drawn."""
    backend = served("flux1-fill")
    spec = ModelSpec(name="flux1-fill", source="unused", resolution=RESOLUTION)

    async def scenario() -> None:
        engine = LocalEngine([spec], {"flux1-fill": backend})
        engine.drain()
        with pytest.raises(UnsupportedTask, match="edits without a mask"):
            await engine.run(Task(model="flux1-fill", kind=TaskKind.EDIT,
                                  params=params(image=start_image())))
        with pytest.raises(Draining):
            await engine.run(Task(model="flux1-fill", kind=TaskKind.EDIT,
                                  params=masked(params(image=start_image()))))
        await engine.stop()

    asyncio.run(scenario())
    assert calls == []


@pytest.mark.parametrize("name", GENERATING)
def test_generates_n_images_of_the_exact_size_in_one_call(
        name: str, served: Callable[[str], DiffusersBackend], calls: list[Call]) -> None:
    images = served(name).generate(params(seeds=(1, 2)))
    assert_sized(images, 2)
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
    (call,) = calls
    assert (len(call.kwargs["prompt"]), call.kwargs["width"], call.kwargs["height"]) == (
        2, WIDTH, HEIGHT)


@pytest.mark.parametrize("name", NAMES)
def test_partial_images_are_decoded_as_the_pipeline_decodes_its_latents(
        name: str, served: Callable[[str], DiffusersBackend],
        caplog: pytest.LogCaptureFixture) -> None:
    """At every step a preview of the image as it stands, of its size; at the last, the
    image itself (the latents of a flow-matching model's last step are the image's)."""
    expected = EXPECTED[name]
    request = params() if expected.generates else params(
        image=start_image(), mask=None if expected.unmasked else mask())
    previews: list[Image.Image | None] = []

    def on_step(step: int, total: int, preview: Preview | None = None) -> None:
        previews.append(preview(0) if preview is not None else None)

    with caplog.at_level(logging.WARNING):
        (image,) = served(name).generate(request, on_step=on_step)
    assert len(previews) == 2
    assert all(isinstance(p, Image.Image) and p.size == (WIDTH, HEIGHT) for p in previews)
    last = previews[-1]
    assert last is not None
    assert np.abs(np.asarray(last, np.int16) - np.asarray(image, np.int16)).mean() < 1.0
    assert "partial images cannot be decoded" not in caplog.text


@pytest.mark.parametrize("name", NAMES)
def test_a_masked_edit_is_drawn_by_the_familys_inpainting_pipeline(
        name: str, served: Callable[[str], DiffusersBackend], calls: list[Call]) -> None:
    expected = EXPECTED[name]
    images = served(name).generate(params(image=start_image(), mask=mask(), strength=0.9,
                                          seeds=(1, 2)))
    assert_sized(images, 2)
    assert {call.pipeline for call in calls} == {expected.masked}
    if "Inpaint" in expected.masked or "Fill" in expected.masked:
        assert all("mask_image" in call.kwargs for call in calls)
    else:  # an instruction edit: the service keeps the pixels the mask keeps
        assert all("mask_image" not in call.kwargs for call in calls)


@pytest.mark.parametrize("name", NAMES)
def test_an_edit_without_a_mask_and_a_variation(
        name: str, served: Callable[[str], DiffusersBackend], calls: list[Call]) -> None:
    backend, expected = served(name), EXPECTED[name]
    edit, variation = (params(image=start_image(), strength=0.6),
                       params(prompt="", image=start_image(), strength=0.6))
    if expected.unmasked is None:
        assert TaskKind.VARIATION not in backend.tasks
        for request in (edit, variation):
            with pytest.raises(UnsupportedTask, match="without a mask"):
                backend.generate(request)
        assert calls == []
        return
    assert_sized(backend.generate(edit), 1)
    assert_sized(backend.generate(variation), 1)
    assert [call.pipeline for call in calls] == [expected.unmasked] * 2
    if "Img2Img" in expected.unmasked:
        assert all(call.kwargs["strength"] == 0.6 for call in calls)
    else:  # instruction edits take no strength
        assert all("strength" not in call.kwargs for call in calls)


@pytest.mark.parametrize("name", NAMES)
def test_references_up_to_the_familys_limit_and_no_further(
        name: str, served: Callable[[str], DiffusersBackend], calls: list[Call]) -> None:
    backend, limit = served(name), EXPECTED[name].max_images
    edit = params(image=start_image(), mask=None if EXPECTED[name].unmasked else mask())
    references = tuple(start_image(shade) for shade in range(60, 60 + 10 * limit, 10))
    if limit > 1:
        assert_sized(backend.generate(replace(edit, references=references[:-1])), 1)
        (call,) = calls
        assert len(call.kwargs["image"]) == limit  # the first image and its references
    with pytest.raises(UnsupportedTask, match=f"more than {limit} image"):
        backend.generate(replace(edit, references=references))


@pytest.mark.parametrize(("name", "drawn_by", "one_reference_as"), [
    # klein's inpainting takes one reference beside the image; more go to an instruction
    # edit, whose unmasked pixels the service keeps.
    ("flux2-klein", ["Flux2KleinInpaintPipeline", "Flux2KleinPipeline"], "image_reference"),
    ("flux2-dev", ["Flux2Pipeline", "Flux2Pipeline"], "image"),
    ("qwen-image-edit-plus", ["QwenImageEditPlusPipeline"] * 2, "image"),
])
def test_a_masked_edit_with_references(
        name: str, drawn_by: list[str], one_reference_as: str,
        served: Callable[[str], DiffusersBackend], calls: list[Call]) -> None:
    backend = served(name)
    for count in (1, 2):
        references = tuple(start_image(shade) for shade in range(70, 70 + 10 * count, 10))
        assert_sized(backend.generate(params(image=start_image(), mask=mask(),
                                             references=references)), 1)
    assert [call.pipeline for call in calls] == drawn_by
    assert one_reference_as in calls[0].kwargs


@pytest.mark.parametrize(("name", "used"), [
    ("flux1-dev", False), ("flux2-dev", False), ("flux2-klein", False),
    ("sd35", True), ("qwen-image", True), ("z-image", True)])
def test_a_negative_prompt_is_used_or_its_absence_logged(
        name: str, used: bool, served: Callable[[str], DiffusersBackend],
        calls: list[Call], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="diffuserve.engine.backends.diffusers"):
        served(name).generate(params(negative_prompt="blurry", seeds=(1, 2)))
    (call,) = calls
    unused = [r for r in caplog.records if r.getMessage() == "negative prompt not used"]
    if used:
        assert call.kwargs["negative_prompt"] == ["blurry", "blurry"]
        assert unused == []
    else:
        assert "negative_prompt" not in call.kwargs
        (record,) = unused  # one line for the request
        assert record.fields["model"] == name  # type: ignore[attr-defined]


def test_qwen_image_guides_with_true_cfg_against_a_blank_negative_prompt(
        served: Callable[[str], DiffusersBackend], calls: list[Call]) -> None:
    served("qwen-image").generate(params(guidance_scale=4.0))
    (call,) = calls
    assert call.kwargs["true_cfg_scale"] == 4.0
    assert call.kwargs["negative_prompt"] == [" "]
    assert "guidance_scale" not in call.kwargs


def test_step_distilled_klein_is_drawn_without_guidance(
        served: Callable[[str], DiffusersBackend], calls: list[Call]) -> None:
    served("flux2-klein").generate(params(guidance_scale=4.0))
    served("flux2-klein-base").generate(params(guidance_scale=4.0))
    assert [call.kwargs["guidance_scale"] for call in calls] == [1.0, 4.0]


@pytest.mark.parametrize(("name", "window"), [("flux1-dev", 511), ("sd35", 255)])
def test_t5_families_count_prompts_in_t5_tokens_up_to_its_window(
        name: str, window: int, served: Callable[[str], DiffusersBackend]) -> None:
    """The window is T5's (``max_sequence_length`` less its end token), counted with it
    (CLIP's 77 tokens are truncated as the models were trained)."""
    backend = served(name)
    t5 = backend.pipeline.tokenizer_2 if name == "flux1-dev" else backend.pipeline.tokenizer_3
    assert backend.max_prompt_tokens == window
    prompt = "a red fox " * 20
    assert backend.count_tokens(prompt) == len(t5(prompt, add_special_tokens=False).input_ids)


def test_a_prompt_as_long_as_the_window_is_read_whole(
        served: Callable[[str], DiffusersBackend]) -> None:
    """Z-Image encodes its chat template to ``max_sequence_length`` tokens: a prompt of
    the window's length fills it to the last token, and one token more is cut."""
    backend = served("z-image")
    window = backend.max_prompt_tokens
    assert window is not None
    encode = backend.pipeline._encode_prompt
    lengths = [len(encode(["a" * size], device="cpu")[0])
               for size in (window - 1, window, window + 1)]
    assert backend.count_tokens("a" * window) == window
    assert lengths == [511, 512, 512]


def test_a_preview_that_cannot_be_decoded_is_a_warning_once(
        served: Callable[[str], DiffusersBackend], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    class Undecodable(Flux1):
        def decode_latents(self, pipeline: Any, latents: Any,
                           draw_size: tuple[int, int]) -> Any:
            raise RuntimeError("shapes")

    backend = served("flux1-dev")
    monkeypatch.setattr(backend, "_previews", Previews("flux1-dev", Undecodable()))
    previews: list[Image.Image | None] = []

    def on_step(step: int, total: int, preview: Preview | None = None) -> None:
        previews.append(preview(0) if preview is not None else None)

    with caplog.at_level(logging.DEBUG):
        images = backend.generate(params(num_inference_steps=3), on_step=on_step)
        backend.generate(params(), on_step=on_step)
    assert_sized(images, 1)
    assert previews == [None] * 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "partial images cannot be decoded" in r.getMessage()]
    assert len(warnings) == 1


def test_a_model_that_only_inpaints_measures_and_warms_with_masked_edits(
        family_folder: Callable[[str], Path]) -> None:
    spec = ModelSpec(name="fill", source=str(family_folder("flux1-fill")),
                     resolution=RESOLUTION, max_batch_size="auto", workers=2)
    backend = DiffusersBackend(spec)
    backend.load()
    assert backend.workers == 2 and (backend.max_batch_images or 0) >= 1
    assert_sized(backend.generate(params(image=start_image(), mask=mask())), 1)


@pytest.mark.skipif(has_torchvision(), reason="torchvision is installed: no stand-ins")
def test_processors_that_need_torchvision_load_without_it(
        family_folder: Callable[[str], Path], caplog: pytest.LogCaptureFixture) -> None:
    for name in ("flux2-dev", "qwen-image-edit-plus"):
        caplog.clear()
        spec = ModelSpec(name=name, source=str(family_folder(name)), resolution=RESOLUTION)
        with caplog.at_level(logging.WARNING):
            DiffusersBackend(spec).load()
        assert [r.getMessage() for r in caplog.records
                if "torchvision" in r.getMessage()] == [
            "torchvision is not installed: processors that need it are loaded without it"]


def test_call_arguments_a_pipeline_does_not_take_are_never_passed() -> None:
    class Instruct:
        def __call__(self, prompt: str, image: object = None) -> None: ...

    class Open:
        def __call__(self, prompt: str, **kwargs: object) -> None: ...

    arguments = {"prompt": "p", "image": 1, "mask_image": 2, "strength": 0.5}
    assert accepted_arguments(Instruct(), arguments) == {"prompt": "p", "image": 1}
    assert accepted_arguments(Open(), arguments) == arguments


def test_adapters_are_chosen_by_the_pipelines_class() -> None:
    from diffusers import FluxKontextPipeline, FluxPipeline, StableDiffusionPipeline

    class Tuned(FluxKontextPipeline):  # type: ignore[misc]
        """A subclass of a listed pipeline gets its family's adapter."""

    class FluxLike:
        """Not a diffusers class, whatever its name."""

    FluxLike.__name__ = "FluxPipeline"
    assert type(family_of(object.__new__(FluxPipeline))).__name__ == "Flux1"
    assert family_of(object.__new__(Tuned)).name == "flux1-kontext"
    assert type(family_of(object.__new__(StableDiffusionPipeline))) is Family
    assert type(family_of(FluxLike())) is Family


def test_a_flow_matching_preview_is_the_clean_image_the_step_predicted() -> None:
    """Where the velocity a model predicts does not change, every step's estimate is the
    image the last step will reach; the latents themselves are still half noise."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from diffuserve.engine.backends.diffusers.previews import clean_estimate

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    clean = torch.rand(1, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    latents, velocity = noise, noise - clean  # x_t = (1 - t) clean + t noise
    estimates = []
    for timestep in scheduler.timesteps:
        previous = latents
        latents = scheduler.step(velocity, timestep, latents).prev_sample
        estimates.append(clean_estimate(scheduler, latents, previous))
    assert all(torch.allclose(estimate, clean, atol=1e-5) for estimate in estimates)
    assert clean_estimate(scheduler, latents, None) is latents  # the first step: as it is

"""The tiny pipelines of each model family load from their folders as the real models do,
and draw an image of the requested size in two steps."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from tests.support.tiny_families import FAMILIES, load_pipeline

WIDTH, HEIGHT = 96, 64  # not square, so a swapped width and height shows


def _image() -> Image.Image:
    return Image.new("RGB", (WIDTH, HEIGHT), (200, 40, 40))


def _mask() -> Image.Image:
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    mask.paste(255, (32, 16, 64, 48))
    return mask


# name -> (pipeline class in model_index.json, what the call takes beyond prompt and size)
CASES: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "flux1-dev": ("FluxPipeline", dict),
    "flux1-schnell": ("FluxPipeline", dict),
    "flux1-fill": ("FluxFillPipeline", lambda: {"image": _image(), "mask_image": _mask()}),
    # Kontext takes its output's area from max_area (height and width give only the aspect)
    # and resizes the input image to a preferred resolution of about 1 MP unless told not to.
    "flux1-kontext": ("FluxKontextPipeline", lambda: {
        "image": _image(), "max_area": WIDTH * HEIGHT, "_auto_resize": False}),
    "flux2-dev": ("Flux2Pipeline", dict),
    "flux2-dev+image": ("Flux2Pipeline", lambda: {"image": [_image()]}),
    "flux2-klein": ("Flux2KleinPipeline", dict),
    "flux2-klein+image": ("Flux2KleinPipeline", lambda: {"image": [_image()]}),
    "flux2-klein-base": ("Flux2KleinPipeline", dict),
    "sd35": ("StableDiffusion3Pipeline", dict),
    "qwen-image": ("QwenImagePipeline", lambda: {"negative_prompt": " "}),
    # Both edit pipelines resize every input image to about 1 MP for the VAE: the slow ones.
    "qwen-image-edit": ("QwenImageEditPipeline", lambda: {"image": _image()}),
    "qwen-image-edit-plus": ("QwenImageEditPlusPipeline",
                             lambda: {"image": [_image(), _image().rotate(180)]}),
    "z-image": ("ZImagePipeline", dict),
}



def test_every_family_has_a_case() -> None:
    assert {case.split("+")[0] for case in CASES} == set(FAMILIES)


@pytest.mark.parametrize("case", list(CASES))
def test_family_loads_from_its_folder_and_draws_the_requested_size(
    case: str, family_folder: Callable[[str], Path]
) -> None:
    name = case.split("+")[0]
    pipeline_class, extra = CASES[case]
    folder = family_folder(name)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == pipeline_class

    pipe = load_pipeline(folder)
    assert type(pipe).__name__ == pipeline_class
    images = pipe(prompt="a red fox in the snow", height=HEIGHT, width=WIDTH,
                  num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  **extra()).images

    assert len(images) == 1
    assert isinstance(images[0], Image.Image)
    assert (images[0].size, images[0].mode) == ((WIDTH, HEIGHT), "RGB")


def test_flux2_klein_inpaints_through_from_pipe(family_folder: Callable[[str], Path]) -> None:
    from diffusers import Flux2KleinInpaintPipeline

    pipe = Flux2KleinInpaintPipeline.from_pipe(load_pipeline(family_folder("flux2-klein")))
    image = pipe(prompt="a red fox", image=_image(), mask_image=_mask(), height=HEIGHT,
                 width=WIDTH, strength=0.9, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (WIDTH, HEIGHT)


@pytest.mark.parametrize(("name", "component", "class_name", "files"), [
    ("flux2-dev", "tokenizer", "PixtralProcessor",
     {"processor_config.json", "preprocessor_config.json", "tokenizer.json",
      "chat_template.jinja"}),
    ("qwen-image-edit", "processor", "Qwen2VLProcessor",
     {"preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json",
      "chat_template.jinja"}),
    ("qwen-image-edit-plus", "processor", "Qwen2VLProcessor",
     {"preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json",
      "chat_template.jinja"}),
])
def test_processors_are_saved_as_the_model_repos_have_them(
    name: str, component: str, class_name: str, files: set[str],
    family_folder: Callable[[str], Path],
) -> None:
    folder = family_folder(name)
    assert json.loads((folder / "model_index.json").read_text())[component] == [
        "transformers", class_name]
    assert files <= {p.name for p in (folder / component).iterdir()}


def test_builders_write_the_same_weights_every_time(tmp_path: Path) -> None:
    def digests(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*.safetensors"))}

    for name, build in FAMILIES.items():
        first, second = build(tmp_path / name / "1"), build(tmp_path / name / "2")
        assert digests(first), name
        assert digests(first) == digests(second), name

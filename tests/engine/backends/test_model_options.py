"""A model's memory and speed options through the diffusers backend, on the CPU with tiny
random pipelines: quantised weights (int8, fp8, a GGUF denoiser) that load and draw with
fewer weight bytes, step caches that draw batched and streamed with their state fresh for
every call, and what the CPU cannot run refused at load in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.diffusers import DiffusersBackend, quantizing
from diffuserve.engine.backends.diffusers.memory import weight_bytes
from diffuserve.engine.errors import ModelLoadFailed
from diffuserve.engine.types import GenerationParams, Preview
from tests.support.tiny_gguf import write_gguf_transformer

Folder = Callable[[str], Path]


def params(steps: int = 2, seeds: tuple[int, ...] = (1,), **overrides: object) -> GenerationParams:
    values: dict[str, object] = {
        "prompt": "a red apple", "negative_prompt": None, "width": 64, "height": 64,
        "num_inference_steps": steps, "guidance_scale": 3.5, "seeds": seeds}
    values.update(overrides)
    return GenerationParams(**values)  # type: ignore[arg-type]


def loaded(folder: Path, **options: object) -> DiffusersBackend:
    options.setdefault("max_batch_size", 4)
    backend = DiffusersBackend(ModelSpec(name="tiny", source=str(folder),
                                         **options))  # type: ignore[arg-type]
    backend.load()
    return backend


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.int16)


def tensor_types(module: Any) -> set[str]:
    """The kinds of tensor ``module``'s parameters are."""
    return {type(parameter).__name__ for parameter in module.parameters()}


def refused_at_load(folder: Path, **options: object) -> str:
    with pytest.raises(ModelLoadFailed) as caught:
        loaded(folder, **options)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("Model 'tiny'")
    return message


@pytest.fixture(scope="module")
def flux(family_folder: Folder) -> Path:
    return family_folder("flux1-dev")


@pytest.fixture(scope="module")
def plain(flux: Path) -> DiffusersBackend:
    return loaded(flux)


# ----------------------------------------------------------------------- quantised weights

@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantised_weights_load_and_draw_with_fewer_bytes(
        flux: Path, plain: DiffusersBackend, kind: str) -> None:
    quantised = loaded(flux, quantize=kind)
    pipeline = quantised.pipeline
    # The denoiser and the LLM text encoder (T5) hold torchao's tensors; CLIP is kept.
    tensor = "Int8Tensor" if kind == "int8" else "Float8Tensor"
    assert tensor in tensor_types(pipeline.transformer)
    assert tensor in tensor_types(pipeline.text_encoder_2)
    assert tensor_types(pipeline.text_encoder) == {"Parameter"}
    assert tensor_types(plain.pipeline.transformer) == {"Parameter"}
    assert weight_bytes(pipeline) < 0.7 * weight_bytes(plain.pipeline)
    drawn = quantised.generate(params(seeds=(3, 4)))
    expected = plain.generate(params(seeds=(3, 4)))
    for image, reference in zip(drawn, expected, strict=True):
        assert image.size == (64, 64)
        assert np.abs(pixels(image) - pixels(reference)).mean() < 2.0


def test_a_gguf_denoiser_loads_with_the_rest_of_the_pipeline_from_source(
        flux: Path, plain: DiffusersBackend, tmp_path: Path) -> None:
    gguf = write_gguf_transformer(flux, tmp_path / "transformer-Q8_0.gguf")
    backend = loaded(flux, transformer=str(gguf))
    weight = backend.pipeline.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "GGUFParameter"
    # The Q8_0 denoiser: about a quarter of its float32 bytes (Q8_0 keeps a 2-byte
    # scale per 32 values; norms and biases stay float32), the rest of the pipeline as it was.
    assert weight_bytes(backend.pipeline.transformer) \
        < 0.5 * weight_bytes(plain.pipeline.transformer)
    assert weight_bytes(backend.pipeline.vae) == weight_bytes(plain.pipeline.vae)
    (image,) = backend.generate(params())
    (reference,) = plain.generate(params())
    assert np.abs(pixels(image) - pixels(reference)).mean() < 2.0


def test_the_built_in_models_denoiser_is_quantised_in_place() -> None:
    """Its compact UNet's own loader ignores diffusers' quantisation config: torchao's
    quantize_ converts the UNet's linear layers after loading."""
    from diffuserve.builtin import WEIGHTS_DIR

    backend = loaded(WEIGHTS_DIR, quantize="int8")
    unet = backend.pipeline.unet
    assert type(unet.time_embedding.linear_1.weight).__name__ == "Int8Tensor"
    linear = sum(module.weight.numel() for module in unet.modules()
                 if type(module).__name__ == "Linear")
    total = sum(parameter.numel() for parameter in unet.parameters())
    # float32 linear weights (4 bytes each) now take 1 byte and a scale per row.
    assert weight_bytes(backend.pipeline.unet) < 4 * total - 2.5 * linear
    (image,) = backend.generate(params(steps=2, width=256, height=256))
    assert image.size == (256, 256)


# ---------------------------------------------------------------- refused at load, one line

@pytest.mark.parametrize(("options", "says"), [
    ({"quantize": "nf4"}, 'quantize = "nf4" needs a CUDA device'),
    ({"quantize": "int4"}, 'quantize = "int4" needs a CUDA device'),
    ({"offload": "model"}, "offload = 'model' keeps weights on the CPU"),
    ({"offload": "sequential"}, "remove offload"),
    ({"offload": "group"}, "remove offload"),
])
def test_what_needs_cuda_is_refused_at_load_on_the_cpu(
        flux: Path, options: dict[str, object], says: str) -> None:
    assert says in refused_at_load(flux, **options)


def test_quantize_without_torchao_is_refused_saying_what_to_install(
        flux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantizing, "_installed", lambda package: package != "torchao")
    message = refused_at_load(flux, quantize="int8")
    assert "needs torchao" in message and "diffuserve[quantize]" in message


def test_a_gguf_file_for_a_pipeline_without_a_transformer_is_refused(
        tiny_models: dict[str, Path], flux: Path, tmp_path: Path) -> None:
    gguf = write_gguf_transformer(flux, tmp_path / "flux.gguf")
    message = refused_at_load(tiny_models["sd"], transformer=str(gguf))
    assert "StableDiffusionPipeline has none" in message and "UNet2DConditionModel" in message
    assert "no such file" in refused_at_load(flux, transformer=str(tmp_path / "gone.gguf"))


@pytest.mark.parametrize(("family", "cache", "says"), [
    ("sd", "first-block:0.1", "applies to transformer models"),
    ("sd35", "taylorseer", "SD3Transformer2DModel takes none"),
    ("z-image", "faster", "ZImageTransformer2DModel takes none"),
    # FLUX.2's blocks return what diffusers' first-block hooks do not expect: found by
    # the drawing at load.
    ("flux2-dev", "first-block:0.1", "does not draw with cache = 'first-block:0.1' on cpu"),
    # Its true CFG runs the denoiser per branch, in a context each: FasterCache's one
    # state would mix them.
    ("qwen-image", "faster", "runs the denoiser once per guidance branch (cond, uncond)"),
])
def test_a_cache_the_denoiser_cannot_take_is_refused_at_load(
        family_folder: Folder, tiny_models: dict[str, Path], family: str, cache: str,
        says: str) -> None:
    folder = tiny_models["sd"] if family == "sd" else family_folder(family)
    assert says in refused_at_load(folder, cache=cache)


# ----------------------------------------------------------------------------- step caches

STEPS = 8  # enough for each cache to reuse what it kept (TaylorSeer from the 4th step)


@pytest.fixture(scope="module", params=["first-block:0.5", "taylorseer", "faster"])
def cached(request: pytest.FixtureRequest, flux: Path) -> DiffusersBackend:
    return loaded(flux, cache=request.param)


def test_a_cached_model_draws_a_batch_close_to_the_uncached_one(
        cached: DiffusersBackend, plain: DiffusersBackend) -> None:
    requests = [params(STEPS, seeds=(1, 2)), params(STEPS, seeds=(3,), prompt="a boat")]
    drawn = cached.generate_batch(requests, max_images=4)
    expected = plain.generate_batch(requests, max_images=4)
    differences = []
    for images, references in zip(drawn, expected, strict=True):
        assert isinstance(images, list) and isinstance(references, list)
        for image, reference in zip(images, references, strict=True):
            assert image.size == (64, 64)
            differences.append(np.abs(pixels(image) - pixels(reference)))
    # The cache skipped work: not the uncached images, and close to them.
    assert any(difference.any() for difference in differences)
    assert max(float(difference.mean()) for difference in differences) < 2.0


def test_a_cached_model_streams_and_its_state_does_not_leak_between_calls(
        cached: DiffusersBackend) -> None:
    """A streamed call with previews; another call; the first again, cut short after its
    3rd step (which leaves the hooks' state behind: diffusers resets it only at a call's
    end); then the first call again draws the same image. (Without the reset before each
    call, TaylorSeer and FasterCache draw another image here: they count steps; the
    first-block cache, which compares outputs, happens to draw the same.)"""
    steps: list[int] = []
    previews: list[object] = []

    def on_step(step: int, total: int, preview: Preview | None = None) -> None:
        steps.append(step)
        previews.append(preview(0) if preview is not None else None)

    (streamed,) = cached.generate(params(STEPS, seeds=(7,)), on_step=on_step)
    assert steps == list(range(1, STEPS + 1))
    assert all(isinstance(p, Image.Image) and p.size == (64, 64) for p in previews)
    cached.generate(params(STEPS, seeds=(8, 9), prompt="a boat"))

    class CutShort(Exception):
        pass

    def cancel(step: int, total: int, preview: Preview | None = None) -> None:
        if step == 3:
            raise CutShort

    with pytest.raises(CutShort):
        cached.generate(params(STEPS, seeds=(7,)), on_step=cancel)
    (again,) = cached.generate(params(STEPS, seeds=(7,)))
    assert np.array_equal(pixels(streamed), pixels(again))


@pytest.mark.usefixtures("eager_dynamo")
def test_a_quantised_model_compiles_and_draws_what_it_draws_uncompiled(flux: Path) -> None:
    """Dynamo traces through torchao's int8 tensors (its graphs run on the eager backend
    here; inductor's kernels for them are not built in the tests)."""
    compiled = loaded(flux, quantize="int8", compile="default", max_batch_size=1,
                      compile_sizes=("64x64",))
    assert "Int8Tensor" in tensor_types(compiled.pipeline.transformer)
    eager = loaded(flux, quantize="int8")
    (image,) = compiled.generate(params())
    (reference,) = eager.generate(params())
    assert np.abs(pixels(image) - pixels(reference)).mean() < 1.0

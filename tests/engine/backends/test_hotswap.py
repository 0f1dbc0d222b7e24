"""Adapters on a compiled model: one adapter at a time (or none) swapped into the hotswap
slot compiled in at load, without recompiling, drawing what the uncompiled model draws
with the same adapter; anything the slot cannot take loads the ordinary way, and the log
says why that swap recompiles.

Dynamo traces for real and counts the graphs it makes; they run on its ``eager`` backend
(the ``eager_dynamo`` fixture). Inductor's own part (weights left unfrozen so that a swap
reaches the compiled graph) is measured by ``benchmarks/hotswap.py``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.compilation import unfrozen
from diffuserve.engine.backends.diffusers import DiffusersBackend
from diffuserve.engine.types import GenerationParams
from tests.support.tiny_loras import TARGETS, write_tiny_lora, write_tiny_loras

Lora = tuple[tuple[str, float], ...]


def params(lora: Lora) -> GenerationParams:
    return GenerationParams(prompt="a red apple", negative_prompt=None, width=64,
                            height=64, num_inference_steps=2, guidance_scale=5.0,
                            seeds=(3,), lora=lora)


def backends(source: Path, adapters: Path, caplog: pytest.LogCaptureFixture,
             **settings: Any) -> tuple[DiffusersBackend, DiffusersBackend]:
    """The model compiled, and uncompiled (what it should draw), with the adapters of
    ``adapters``."""
    spec = {"source": str(source), "max_batch_size": 1, "adapters_dir": str(adapters),
            **settings}
    eager = DiffusersBackend(ModelSpec(name="eager", **spec))
    eager.load()
    compiled = DiffusersBackend(ModelSpec(name="compiled", compile="default", **spec))
    with caplog.at_level(logging.INFO, logger="diffuserve.engine.backends.diffusers"):
        compiled.load()
    return compiled, eager


def drawn(backend: DiffusersBackend, lora: Lora) -> Any:
    return np.asarray(backend.generate(params(lora))[0], np.int16)


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def recompile_reasons(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [record.fields for record in caplog.records  # type: ignore[attr-defined]
            if record.getMessage() == "adapters swapped with a recompile"]


@pytest.mark.usefixtures("eager_dynamo")
def test_single_adapters_and_none_swap_on_a_compiled_model_without_recompiling(
        tiny_models: dict[str, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    write_tiny_loras(tiny_models["sd"], tmp_path / "loras", ["pixel", "ink"])
    compiled, eager = backends(tiny_models["sd"], tmp_path / "loras", caplog)
    (loaded,) = [record for record in caplog.records
                 if record.getMessage() == "adapters hotswapped on a compiled model"]
    assert loaded.fields["max_adapter_rank"] == 64  # type: ignore[attr-defined]
    (compiled_line,) = [record for record in caplog.records
                        if record.getMessage() == "model compiled"]
    # The adapters' layers on the QKV projections would be bypassed by fused ones.
    assert compiled_line.fields["compiled"][0] == (  # type: ignore[attr-defined]
        "unet (weights not frozen, for adapters)")
    assert compiled.describe()["adapters"]["hotswap"] is True  # type: ignore[index]
    before = graphs()
    assert before > 0

    plain = drawn(compiled, ())
    pictures = {}
    for lora in [(("pixel", 1.0),), (("ink", 1.0),), (), (("pixel", 0.5),),
                 (("ink", -1.5),), (("pixel", 1.0),), ()]:
        picture = pictures[lora] = drawn(compiled, lora)
        assert np.abs(picture - drawn(eager, lora)).mean() < 1.0, lora
    assert graphs() == before  # nothing compiled again
    assert np.abs(pictures[(("pixel", 1.0),)] - plain).mean() > 5  # the adapters draw
    assert np.abs(pictures[(("ink", 1.0),)] - pictures[(("pixel", 1.0),)]).mean() > 5
    assert np.abs(pictures[()] - plain).mean() < 1.0
    assert recompile_reasons(caplog) == []
    assert compiled._adapters is not None and compiled._adapters.loaded() == []


@pytest.mark.usefixtures("eager_dynamo")
def test_a_set_of_several_adapters_on_a_compiled_model_says_why_it_recompiles(
        tiny_models: dict[str, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    write_tiny_loras(tiny_models["sd"], tmp_path / "loras", ["pixel", "ink"])
    compiled, eager = backends(tiny_models["sd"], tmp_path / "loras", caplog)
    both = (("ink", 1.0), ("pixel", 0.5))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="diffuserve.engine.backends.diffusers"):
        for lora in [(("pixel", 1.0),), both, (("ink", 1.0),), both, ()]:
            assert np.abs(drawn(compiled, lora) - drawn(eager, lora)).mean() < 1.0, lora
    reasons = recompile_reasons(caplog)
    assert [reason["adapters"] for reason in reasons] == [["ink", "pixel"]] * 2
    assert "the hotswap slot holds one adapter" in reasons[0]["why"]
    assert "recompiles" in reasons[0]["why"]
    warned = [record.levelno for record in caplog.records
              if record.getMessage() == "adapters swapped with a recompile"]
    assert warned == [logging.WARNING, logging.INFO]  # a warning the first time only


@pytest.mark.usefixtures("eager_dynamo")
def test_an_adapter_the_slot_cannot_take_loads_the_ordinary_way_and_says_why(
        tiny_models: dict[str, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from diffusers import DiffusionPipeline

    folder = tmp_path / "loras"
    write_tiny_loras(tiny_models["sd"], folder, ["pixel", "ink"])
    compiled, eager = backends(tiny_models["sd"], folder, caplog, max_adapter_rank=4)
    # Dropped in later: one of a rank above max_adapter_rank, one with text encoder
    # layers, one that reaches layers the slot's adapter does not (diffusers removes the
    # slot when such a swap fails).
    pipeline = DiffusionPipeline.from_pretrained(str(tiny_models["sd"]))
    write_tiny_lora(pipeline, folder, "wide_rank", seed=5, rank=8)
    write_tiny_lora(pipeline, folder, "with_words", seed=7, text_encoder=True)
    write_tiny_lora(pipeline, folder, "more_layers", seed=6,
                    targets=[*TARGETS, "ff.net.0.proj", "ff.net.2"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="diffuserve.engine.backends.diffusers"):
        for lora in [(("wide_rank", 1.0),), (("with_words", 1.0),), (("pixel", 1.0),),
                     (("more_layers", 1.0),), (("ink", 1.0),), (),
                     (("more_layers", 0.5),), (("with_words", 1.0),)]:
            assert np.abs(drawn(compiled, lora) - drawn(eager, lora)).mean() < 1.0, lora
    reasons = {reason["adapters"][0]: reason["why"] for reason in recompile_reasons(caplog)}
    assert "rank 8 is above the model's max_adapter_rank 4" in reasons["wide_rank"]
    assert "hotswapping is not supported for text encoders" in reasons["with_words"]
    assert "could not hotswap" in reasons["more_layers"]
    # pixel, ink and none: through the slot.
    assert set(reasons) == {"wide_rank", "with_words", "more_layers"}
    assert [record.getMessage() for record in caplog.records].count(
        "hotswap slot loaded again") == 1
    # The slot is back for the adapters it takes: they swap without compiling again.
    before = graphs()
    for lora in [(("ink", 1.0),), (("pixel", 1.0),), ()]:
        assert np.abs(drawn(compiled, lora) - drawn(eager, lora)).mean() < 1.0, lora
    assert graphs() == before


def test_a_denoiser_for_adapters_is_compiled_with_its_weights_unfrozen() -> None:
    # torch.compile takes a mode or inductor's options: the mode's options, unfrozen.
    assert unfrozen({"mode": "default"}) == {"options": {"freezing": False}}
    assert unfrozen({"mode": "reduce-overhead"}) == {
        "options": {"triton.cudagraphs": True, "freezing": False}}
    assert unfrozen({"backend": "eager"}) == {"backend": "eager"}

"""Which adapters a request draws with: the model's own, then the request's."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffuserve.config import ModelSpec
from diffuserve.config.adapters import AdapterSpec, LoraChoice
from diffuserve.engine.adapters import AdapterLibrary
from diffuserve.protocol.adapters import LoraRequest
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.service.adapters import chosen_adapters


def spec(tmp_path: Path, *lora: LoraChoice) -> ModelSpec:
    folder = tmp_path / "loras"
    folder.mkdir(exist_ok=True)
    for name in ("ink", "pixel"):
        (folder / f"{name}.safetensors").write_bytes(b"x")
    return ModelSpec(name="m", source="s", adapters_dir=str(folder), lora=lora,
                     adapters=(AdapterSpec(name="clay", source="c", scale=0.5),))


def chosen(model: ModelSpec, *requested: LoraRequest) -> tuple[tuple[str, float], ...]:
    return chosen_adapters(model, AdapterLibrary(model), requested)


def test_a_request_gets_the_scales_it_asks_for_else_each_adapters_default(
        tmp_path: Path) -> None:
    model = spec(tmp_path)
    assert chosen(model) == ()
    assert chosen(model, LoraRequest("pixel"), LoraRequest("clay")) == (
        ("clay", 0.5), ("pixel", 1.0))
    assert chosen(model, LoraRequest("clay", 2.0)) == (("clay", 2.0),)
    assert chosen(model, LoraRequest("clay", 0.0)) == ()  # as if absent


def test_a_derived_models_own_adapters_come_first_and_the_request_adds_or_rescales(
        tmp_path: Path) -> None:
    model = spec(tmp_path, LoraChoice(name="pixel", scale=0.8))
    assert chosen(model) == (("pixel", 0.8),)
    assert chosen(model, LoraRequest("ink")) == (("ink", 1.0), ("pixel", 0.8))
    assert chosen(model, LoraRequest("pixel", 0.0)) == ()


def test_an_unknown_name_is_refused_with_the_names_the_model_has(tmp_path: Path) -> None:
    model = spec(tmp_path)
    with pytest.raises(InvalidRequestError) as refused:
        chosen(model, LoraRequest("ink"), LoraRequest("nope"))
    error = refused.value
    assert (error.param, error.code) == ("lora[1].name", "adapter_not_found")
    assert "'nope'" in error.message and "clay, ink, pixel" in error.message


def test_a_derived_models_missing_adapter_is_the_models_fault_not_the_requests(
        tmp_path: Path) -> None:
    model = spec(tmp_path, LoraChoice(name="gone"))
    with pytest.raises(InvalidRequestError) as refused:
        chosen(model)
    assert refused.value.param == "model"


def test_no_more_than_eight_adapters_with_the_models_own(tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    model = spec(tmp_path, *(LoraChoice(name=f"a{index}") for index in range(5)))
    for index in range(9):
        (folder / f"a{index}.safetensors").write_bytes(b"x")
    with pytest.raises(InvalidRequestError) as refused:
        chosen(model, *(LoraRequest(f"a{index}") for index in range(5, 9)))
    assert refused.value.param == "lora"

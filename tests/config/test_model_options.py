"""A model's memory and speed options in the models file: quantize, transformer (GGUF),
offload and cache — each spelling taken or refused with a message that says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from diffuserve.config import ModelSpec, load_models_file
from diffuserve.config.options import StepCache, parse_cache


def spec(**fields: object) -> ModelSpec:
    return ModelSpec(name="m", source="owner/model", **fields)  # type: ignore[arg-type]


def refusal(**fields: object) -> str:
    with pytest.raises(ValidationError) as caught:
        spec(**fields)
    (error,) = caught.value.errors()
    return str(error["msg"])


@pytest.mark.parametrize(("value", "parsed"), [
    ("first-block:0.2", StepCache("first-block", 0.2)),
    ("first-block:.05", StepCache("first-block", 0.05)),
    ("first-block:1", StepCache("first-block", 1.0)),
    ("taylorseer", StepCache("taylorseer")),
    ("faster", StepCache("faster")),
])
def test_each_cache_spelling_is_taken(value: str, parsed: StepCache) -> None:
    assert spec(cache=value).cache == value
    assert parse_cache(value) == parsed


@pytest.mark.parametrize(("value", "says"), [
    ("first-block", "needs its threshold"),
    ("first-block:", "needs its threshold"),
    ("first-block:0", "above 0 and at most 1"),
    ("first-block:1.5", "above 0 and at most 1"),
    ("first-block:-0.2", "is not a step cache"),
    ("first-block:1e-1", "is not a step cache"),
    ("first-block: 0.2", "is not a step cache"),
    ("first-block:nan", "is not a step cache"),
    ("First-Block:0.2", "is not a step cache"),
    ("teacache", "is not a step cache"),
    ("taylorseer:2", "is not a step cache"),
])
def test_a_cache_of_another_spelling_is_refused_naming_the_spellings(
        value: str, says: str) -> None:
    message = refusal(cache=value)
    assert says in message
    if "is not a step cache" in says:
        assert "first-block:<threshold>, taylorseer, faster" in message


@pytest.mark.parametrize("value", ["int8", "fp8", "nf4", "int4"])
def test_each_quantize_spelling_is_taken(value: str) -> None:
    assert spec(quantize=value).quantize == value


@pytest.mark.parametrize("value", ["model", "sequential", "group"])
def test_each_offload_spelling_is_taken(value: str) -> None:
    assert spec(offload=value, device="cuda").offload == value


@pytest.mark.parametrize(("field", "value"), [
    ("quantize", "int2"), ("quantize", "bf16"), ("offload", "disk"), ("offload", "auto")])
def test_another_quantize_or_offload_is_refused_naming_the_choices(
        field: str, value: str) -> None:
    assert "Input should be" in refusal(**{field: value})


@pytest.mark.parametrize(("fields", "says"), [
    ({"quantize": "int8", "transformer": "flux-q8.gguf"}, "alternatives: choose one"),
    ({"quantize": "nf4", "device": "cpu"}, "needs a CUDA device"),
    ({"quantize": "int4", "device": "mps"}, "needs a CUDA device"),
    ({"quantize": "int4", "dtype": "float16"}, "computes in bfloat16"),
    ({"quantize": "int8", "runtime": "onnx"}, "choose one"),
    ({"quantize": "nf4", "compile": "default"}, "not tested together"),
    ({"transformer": "f.gguf", "compile": "default"}, "not tested together"),
    ({"offload": "model", "device": "cpu"}, "remove offload"),
    ({"offload": "group", "compile": "default"}, "not tested together"),
    ({"cache": "faster", "compile": "default"}, "alternatives"),
    ({"cache": "taylorseer", "runtime": "onnx"}, "alternatives"),
    ({"cache": "first-block:0.1", "workers": 2}, "the workers share"),
    ({"transformer": "flux.safetensors"}, "a GGUF file (*.gguf) is expected"),
])
def test_options_that_cannot_go_together_are_refused_saying_why(
        fields: dict[str, object], says: str) -> None:
    assert says in refusal(**fields)


def test_options_that_go_together_are_taken() -> None:
    assert spec(quantize="int8", cache="first-block:0.1", compile="off").cache
    assert spec(quantize="int8", compile="default").compile == "default"
    assert spec(quantize="fp8", device="cpu", workers=2).workers == 2
    assert spec(quantize="nf4", offload="model", device="cuda").offload == "model"
    assert spec(transformer="https://huggingface.co/o/r/blob/main/f.GGUF").transformer


def test_a_gguf_path_is_read_from_the_models_files_folder(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[[models]]\nname = "flux"\nsource = "owner/flux"\n'
                    'transformer = "weights/flux-q8.gguf"\n'
                    '[[models]]\nname = "hub"\nsource = "owner/flux"\n'
                    'transformer = "https://huggingface.co/o/r/blob/main/f.gguf"\n')
    local, remote = load_models_file(path)
    assert local.transformer == str((tmp_path / "weights/flux-q8.gguf").resolve())
    assert remote.transformer == "https://huggingface.co/o/r/blob/main/f.gguf"


@pytest.mark.parametrize("entry", [
    'quantize = "int8"', 'transformer = "f.gguf"', 'offload = "model"', 'cache = "faster"'])
def test_a_derived_model_cannot_set_a_weight_option(tmp_path: Path, entry: str) -> None:
    """The options change the shared weights or every call on them: the base's own."""
    path = tmp_path / "models.toml"
    path.write_text('[[models]]\nname = "flux"\nsource = "owner/flux"\n'
                    f'[[models]]\nname = "styled"\nbase = "flux"\n{entry}\n')
    option = entry.split(" ")[0]
    with pytest.raises(ValueError, match=rf"cannot set \['{option}'\]"):
        load_models_file(path)

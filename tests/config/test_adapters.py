"""Adapters in the models file: declared ones, a folder, models derived from another."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from diffuserve.config import ModelSpec, Settings, load_models_file

BASE = """
[[models]]
name = "sdxl"
source = "owner/sdxl"
steps = 30
negative_prompt = "blurry"
aliases = ["big"]
adapters_dir = "loras"
[[models.adapters]]
name = "pixel"
source = "files/pixel.safetensors"
scale = 0.8
[[models.adapters]]
name = "hub"
source = "owner/style-lora"
weight_name = "style.safetensors"
"""


def models(tmp_path: Path, text: str) -> list[ModelSpec]:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return load_models_file(path)


def test_adapter_paths_are_read_from_the_models_files_folder(tmp_path: Path) -> None:
    (spec,) = models(tmp_path, BASE)
    assert spec.adapters_dir == str((tmp_path / "loras").resolve())
    pixel, hub = spec.adapters
    assert pixel.source == str((tmp_path / "files/pixel.safetensors").resolve())
    assert (pixel.scale, hub.source, hub.weight_name) == (0.8, "owner/style-lora",
                                                          "style.safetensors")


def test_a_derived_model_shares_its_bases_weights_with_knobs_of_its_own(
        tmp_path: Path) -> None:
    base, derived = models(tmp_path, BASE + """
[[models]]
name = "pixel-art"
base = "sdxl"
lora = [{ name = "pixel", scale = 0.6 }]
steps = 20
""")
    assert (derived.base, derived.engine_name, base.engine_name) == ("sdxl", "sdxl", "sdxl")
    assert (derived.source, derived.steps, derived.negative_prompt) == (
        base.source, 20, "blurry")
    assert derived.adapters == base.adapters and derived.aliases == ()
    assert [(choice.name, choice.scale) for choice in derived.lora] == [("pixel", 0.6)]
    settings = Settings(models_file=tmp_path / "models.toml")
    assert [spec.name for spec in settings.engine_models] == ["sdxl"]
    assert [spec.name for spec in settings.models] == ["sdxl", "pixel-art"]


@pytest.mark.parametrize(("entry", "message"), [
    ('base = "sdxl"\nsource = "other"', "cannot set ['source']"),
    ('base = "sdxl"\ncompile = "default"', "cannot set ['compile']"),
    ('base = "nope"', "which is not a model of this file"),
    ('base = "derived"', "itself derived"),
])
def test_a_derived_model_that_cannot_be_is_refused_at_start(
        tmp_path: Path, entry: str, message: str) -> None:
    text = BASE + '\n[[models]]\nname = "derived"\nbase = "sdxl"\n' \
        + f'\n[[models]]\nname = "other"\n{entry}\n'
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        models(tmp_path, text)


@pytest.mark.parametrize("adapters", [
    [{"name": "../x", "source": "a"}],
    [{"name": "x", "source": "a", "scale": 9}],
    [{"name": "x", "source": "a"}, {"name": "x", "source": "b"}],
])
def test_bad_declared_adapters_are_refused(adapters: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationError):
        ModelSpec(name="m", source="s", adapters=adapters)  # type: ignore[arg-type]


def test_a_model_keeps_at_least_as_many_adapters_as_one_request_stacks() -> None:
    with pytest.raises(ValidationError):
        ModelSpec(name="m", source="s", max_loaded_adapters=2)

"""Public model names and aliases resolve to the configured models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffuserve.config import ModelSpec, Settings
from diffuserve.protocol.errors import ModelNotFoundError
from diffuserve.protocol.rules import OPENAI_MODEL_NAMES as OPENAI_NAMES  # noqa: E402
from diffuserve.service.catalog import ModelCatalog


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DIFFUSERVE_"):
            monkeypatch.delenv(name)


def spec(name: str, *aliases: str) -> ModelSpec:
    return ModelSpec(name=name, source=f"org/{name}", aliases=aliases)


def registry_for(*specs: ModelSpec, **settings: object) -> ModelCatalog:
    return ModelCatalog.from_settings(Settings(models=specs, **settings))  # type: ignore[arg-type]


# --- resolving names -------------------------------------------------------------------


def test_model_resolves_by_its_name() -> None:
    registry = registry_for(spec("sd"), spec("sdxl"))

    assert registry.resolve("sdxl").name == "sdxl"


def test_model_resolves_by_its_own_alias() -> None:
    registry = registry_for(spec("sd"), spec("sdxl", "hq", "big"))

    assert [registry.resolve(alias).name for alias in ("hq", "big")] == ["sdxl", "sdxl"]


def test_model_resolves_by_a_settings_alias() -> None:
    registry = registry_for(spec("sd"), spec("sdxl"), aliases=("fast=sd", "hq=sdxl"))

    assert (registry.resolve("fast").name, registry.resolve("hq").name) == ("sd", "sdxl")


@pytest.mark.parametrize("name", OPENAI_NAMES)
def test_openai_names_resolve_to_the_first_model(name: str) -> None:
    registry = registry_for(spec("sd"), spec("sdxl"))

    assert registry.resolve(name).name == "sd"


@pytest.mark.parametrize("name", OPENAI_NAMES)
def test_openai_names_resolve_to_the_configured_default_model(name: str) -> None:
    registry = registry_for(spec("sd"), spec("sdxl"), default_model="sdxl")

    assert registry.resolve(name).name == "sdxl"


def test_model_named_like_openai_claims_that_name() -> None:
    registry = registry_for(spec("sd"), spec("dall-e-3"))

    assert registry.resolve("dall-e-3").name == "dall-e-3"
    assert registry.resolve("gpt-image-1").name == "sd"


def test_model_alias_named_like_openai_claims_that_name() -> None:
    registry = registry_for(spec("sd"), spec("sdxl", "gpt-image-1"))

    assert registry.resolve("gpt-image-1").name == "sdxl"
    assert registry.resolve("dall-e-2").name == "sd"


def test_settings_alias_named_like_openai_claims_that_name() -> None:
    registry = registry_for(spec("sd"), spec("sdxl"), aliases=("dall-e-3=sdxl",))

    assert registry.resolve("dall-e-3").name == "sdxl"


@pytest.mark.parametrize("name", OPENAI_NAMES)
def test_openai_names_are_unknown_without_auto_aliases(name: str) -> None:
    registry = registry_for(spec("sd"), auto_aliases=False)

    with pytest.raises(ModelNotFoundError):
        registry.resolve(name)


def test_unknown_model_is_openais_model_not_found() -> None:
    registry = registry_for(spec("sd"))

    with pytest.raises(ModelNotFoundError) as info:
        registry.resolve("dall-e-4")

    error = info.value
    assert error.message == "The model `dall-e-4` does not exist or you do not have access to it."
    assert (error.param, error.code) == ("model", "model_not_found")


# --- the default for an omitted `model` ------------------------------------------------


def test_omitted_model_means_dall_e_2_when_it_is_served() -> None:
    assert registry_for(spec("sd"), spec("sdxl")).request_default() == "dall-e-2"


def test_omitted_model_means_the_default_model_without_auto_aliases() -> None:
    registry = registry_for(spec("sd"), spec("sdxl"), default_model="sdxl", auto_aliases=False)

    assert registry.request_default() == "sdxl"


def test_omitted_model_means_a_model_named_dall_e_2() -> None:
    registry = registry_for(spec("sd"), spec("dall-e-2"), auto_aliases=False)

    assert registry.request_default() == "dall-e-2"


# --- listing ---------------------------------------------------------------------------


def test_names_lists_models_then_aliases() -> None:
    registry = registry_for(spec("sd", "fast"), spec("sdxl"), aliases=("hq=sdxl",))

    names = [(name, model.name) for name, model in registry.names()]

    assert names == [
        ("sd", "sd"),
        ("sdxl", "sdxl"),
        ("fast", "sd"),
        ("hq", "sdxl"),
        *((name, "sd") for name in OPENAI_NAMES),
    ]
    assert "gpt-image-2.5-sunburst" in OPENAI_NAMES  # every name of the SDK's ImageModel


def test_aliases_of_a_model() -> None:
    registry = registry_for(spec("sd", "fast"), spec("sdxl"), aliases=("hq=sdxl",))

    assert registry.aliases_of("sdxl") == ["hq"]
    assert registry.aliases_of("sd") == ["fast", *OPENAI_NAMES]


# --- configuration mistakes ------------------------------------------------------------


def test_settings_alias_equal_to_a_model_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'sd' is configured twice"):
        registry_for(spec("sd"), spec("sdxl"), aliases=("sd=sdxl",))


def test_settings_alias_equal_to_a_model_alias_for_another_model_is_refused() -> None:
    with pytest.raises(ValueError, match="'fast' is configured twice"):
        registry_for(spec("sd", "fast"), spec("sdxl"), aliases=("fast=sdxl",))


def test_alias_to_an_unconfigured_model_is_refused() -> None:
    with pytest.raises(ValueError, match="points at 'sd3', which is not configured"):
        registry_for(spec("sd"), aliases=("fast=sd3",))


def test_unconfigured_default_model_is_refused() -> None:
    with pytest.raises(ValueError, match="default model 'sd3' is not configured"):
        registry_for(spec("sd"), default_model="sd3")


def test_registry_without_models_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        ModelCatalog([])


# --- edit pairing -----------------------------------------------------------------------


def paired(edit_model: str, **settings: object) -> ModelCatalog:
    flux = ModelSpec(name="flux", source="org/flux", aliases=("fast",),
                     edit_model=edit_model)
    return registry_for(flux, spec("qwen-edit", "qwen"), spec("sd"), **settings)


@pytest.mark.parametrize("edit_model", ["qwen-edit", "qwen"])
def test_edits_of_a_paired_model_go_to_the_model_it_names(edit_model: str) -> None:
    catalog = paired(edit_model)

    assert catalog.resolve("flux").name == "flux"  # generations stay its own
    assert [catalog.resolve_edit(name).name for name in ("flux", "fast", "dall-e-2")] == [
        "qwen-edit"] * 3  # its aliases and the OpenAI names pointing at it too
    assert catalog.resolve_edit("sd").name == "sd"  # an unpaired model edits itself


def test_edits_go_to_the_model_named_even_through_a_settings_alias() -> None:
    assert paired("editor", aliases=("editor=qwen-edit",)).resolve_edit("flux").name == (
        "qwen-edit")


def test_the_named_models_own_edit_model_is_not_followed() -> None:
    catalog = registry_for(ModelSpec(name="a", source="a", edit_model="b"),
                           ModelSpec(name="b", source="b", edit_model="c"), spec("c"))

    assert catalog.resolve_edit("a").name == "b"


@pytest.mark.parametrize("edit_model", ["qwen-edit-plus", "gpt-image-1"])
def test_an_edit_model_that_is_not_a_configured_name_is_refused(edit_model: str) -> None:
    with pytest.raises(ValueError, match=f"model 'flux' has edit_model = '{edit_model}', "
                                         "which is not a configured model's name or alias"):
        paired(edit_model)


def test_edit_model_is_read_from_the_models_file(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "flux"\nsource = "org/flux"\nedit_model = "qwen"\n'
                      '[[models]]\nname = "qwen"\nsource = "org/qwen"\n')

    assert registry_for(models_file=models).resolve_edit("flux").name == "qwen"

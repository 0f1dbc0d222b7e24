"""Public model names and aliases resolve to the configured models."""

from __future__ import annotations

import os

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

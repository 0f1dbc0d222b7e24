"""Backends by name through entry points; the built-in runtime registers the same way, and
the built-in model's pipeline class too."""

from __future__ import annotations

import pytest

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.backends.diffusers import DiffusersBackend
from diffuserve.engine.errors import ModelLoadFailed
from diffuserve.engine.plugins import (
    backend_factory,
    create_backends,
    installed_backends,
    pipeline_class,
)
from tests.support.fakes import FakeBackend


def test_the_diffusers_runtime_is_registered_as_an_entry_point() -> None:
    assert installed_backends()["diffusers"] == (
        "diffuserve.engine.backends.diffusers:DiffusersBackend")
    assert backend_factory("diffusers") is DiffusersBackend


def test_an_unknown_backend_names_what_is_installed() -> None:
    with pytest.raises(ModelLoadFailed, match=r"No backend named 'onnx'.*installed: .*diffusers"):
        backend_factory("onnx")


def test_one_backend_per_model_from_the_registered_factories() -> None:
    specs = (ModelSpec(name="a", source="org/a"), ModelSpec(name="b", source="org/b"))

    backends = create_backends(specs)

    assert list(backends) == ["a", "b"]
    assert all(isinstance(backend, DiffusersBackend) for backend in backends.values())
    assert not any(backend.loaded for backend in backends.values())  # loading comes later


def test_explicit_factories_come_first() -> None:
    built: list[str] = []

    def fake(spec: ModelSpec) -> Backend:
        built.append(spec.name)
        return FakeBackend()

    specs = (ModelSpec(name="a", source="a", backend="fake"),)

    assert isinstance(create_backends(specs, {"fake": fake})["a"], FakeBackend)
    assert built == ["a"]


def test_the_builtin_pipeline_class_is_registered_under_its_model_index_name() -> None:
    import json

    from diffuserve.builtin import WEIGHTS_DIR
    from diffuserve.builtin.pipeline import EmojiPipeline

    named = json.loads((WEIGHTS_DIR / "model_index.json").read_text())["_class_name"]
    assert pipeline_class(named) is EmojiPipeline
    # diffusers' own classes are not registered: they load through diffusers.
    assert pipeline_class("StableDiffusionPipeline") is None

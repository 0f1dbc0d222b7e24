"""Backends by name, through the ``diffuserve.backends`` entry-point group, and
pipeline classes by name, through ``diffuserve.pipelines``.

The built-in runtime registers itself there exactly as a third-party package does::

    [project.entry-points."diffuserve.backends"]
    diffusers = "diffuserve.engine.backends.diffusers:DiffusersBackend"

A model's ``backend`` setting names the entry point; its object is called with the
model's :class:`~diffuserve.config.ModelSpec` and returns a
:class:`~diffuserve.engine.backends.base.Backend`.

A pipeline class that diffusers does not know (the built-in model's among them) is
registered under the ``_class_name`` its folders' model_index.json names::

    [project.entry-points."diffuserve.pipelines"]
    MyPipeline = "my_package.pipeline:MyPipeline"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.errors import ModelLoadFailed

ENTRY_POINT_GROUP = "diffuserve.backends"
PIPELINE_ENTRY_POINT_GROUP = "diffuserve.pipelines"

BackendFactory = Callable[[ModelSpec], Backend]


def installed_backends() -> dict[str, str]:
    """Registered backend names → the object each entry point names."""
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def backend_factory(name: str) -> BackendFactory:
    """The factory registered as ``name``; a readable error when there is none."""
    for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        factory: BackendFactory = point.load()
        return factory
    known = ", ".join(sorted(installed_backends())) or "none"
    raise ModelLoadFailed(
        f"No backend named {name!r} is installed (installed: {known}). Install the package "
        f"that provides it, or set the model's `backend` to one of those."
    )


def pipeline_class(class_name: str) -> Any:
    """The pipeline class registered as ``class_name``; None when no installed package
    registers one (diffusers' own classes load through diffusers)."""
    for point in entry_points(group=PIPELINE_ENTRY_POINT_GROUP, name=class_name):
        return point.load()
    return None


def create_backends(
    specs: tuple[ModelSpec, ...], factories: Mapping[str, BackendFactory] | None = None
) -> dict[str, Backend]:
    """One backend per model, from ``factories`` when given, else the entry points."""
    backends: dict[str, Backend] = {}
    for spec in specs:
        factory = (factories or {}).get(spec.backend) or backend_factory(spec.backend)
        backends[spec.name] = factory(spec)
    return backends

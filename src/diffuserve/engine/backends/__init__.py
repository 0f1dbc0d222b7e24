"""Backends, one runtime per module; heavy imports stay inside each module's functions."""

from __future__ import annotations

from collections.abc import Callable

from diffuserve.config import ModelSpec
from diffuserve.engine.base import Backend


def _diffusers(spec: ModelSpec) -> Backend:
    from diffuserve.engine.backends.diffusers import DiffusersBackend

    return DiffusersBackend(spec)


#: Backend factories by the ``backend`` key of a model's configuration.
BACKENDS: dict[str, Callable[[ModelSpec], Backend]] = {"diffusers": _diffusers}


def create_backend(spec: ModelSpec) -> Backend:
    return BACKENDS[spec.backend](spec)

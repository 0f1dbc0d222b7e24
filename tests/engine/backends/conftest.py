"""Fixtures of the backends' tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diffuserve.engine.backends import compilation
from tests.support.tiny_families import FAMILIES


@pytest.fixture
def eager_dynamo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dynamo traces for real; its graphs run on the eager backend (no C++ compiler)."""
    import torch._dynamo

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "kernels"))
    monkeypatch.setattr(compilation, "compile_options", lambda mode: {"backend": "eager"})
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def family_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The folder of family ``name``'s tiny pipeline, built on first use (once for every
    test of the backends)."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def folder(name: str) -> Path:
        if name not in built:
            built[name] = FAMILIES[name](root / name)
        return built[name]

    return folder

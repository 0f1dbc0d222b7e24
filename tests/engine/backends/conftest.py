"""Fixtures of the backends' tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from diffuserve.engine.backends import compilation


@pytest.fixture
def eager_dynamo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dynamo traces for real; its graphs run on the eager backend (no C++ compiler)."""
    import torch._dynamo

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "kernels"))
    monkeypatch.setattr(compilation, "compile_options", lambda mode: {"backend": "eager"})
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()

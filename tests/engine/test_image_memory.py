"""Pillow keeps freed image blocks for reuse in the server's processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.image_memory import BLOCKS_MAX, keep_image_memory
from diffuserve.engine.local.engine import LocalEngine
from tests.support.fakes import FakeBackend


@pytest.fixture(autouse=True)
def restore_blocks_max() -> Iterator[None]:
    before = Image.core.get_blocks_max()
    yield
    Image.core.set_blocks_max(before)


def test_an_engine_keeps_freed_image_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PILLOW_BLOCKS_MAX", raising=False)
    Image.core.set_blocks_max(0)
    LocalEngine([ModelSpec(name="m", source="m")], {"m": FakeBackend()})
    assert Image.core.get_blocks_max() == BLOCKS_MAX
    # Freed blocks are kept, and the next image takes one back.
    Image.core.clear_cache()
    Image.new("RGB", (512, 512)).load()
    assert Image.core.get_stats()["blocks_cached"] >= 1
    Image.new("RGB", (512, 512)).load()
    assert Image.core.get_stats()["reused_blocks"] >= 1


def test_the_operators_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILLOW_BLOCKS_MAX", "3")
    Image.core.set_blocks_max(3)  # as Pillow applied it at import
    keep_image_memory()
    assert Image.core.get_blocks_max() == 3

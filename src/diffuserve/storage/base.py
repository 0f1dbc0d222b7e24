"""The storage interface: local directory now, object stores later."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ImageStore(Protocol):
    def put(self, data: bytes, suffix: str = ".png") -> str:
        """Store ``data``; return its file name (an unguessable id plus ``suffix``)."""
        ...

    def path_of(self, name: str) -> Path | None:
        """The stored file for ``name``, or ``None`` if it is unknown or gone."""
        ...

    def sweep(self, now: float) -> int:
        """Delete what has expired by ``now``; return how many files went."""
        ...

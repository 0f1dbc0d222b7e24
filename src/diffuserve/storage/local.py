"""Images as files in one directory, deleted by the sweeper once their links expire."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

_NAME_RE = re.compile(r"^img_[A-Za-z0-9_-]{22,64}\.(png|jpeg|webp)$")


class LocalImageStore:
    """A flat directory of ``img_<random>.png`` files; the file's mtime starts its life."""

    def __init__(self, directory: Path, ttl_seconds: int) -> None:
        self.directory = directory
        self.ttl_seconds = ttl_seconds
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, suffix: str = ".png") -> str:
        name = f"img_{secrets.token_urlsafe(24)}{suffix}"
        final = self.directory / name
        partial = self.directory / f".{name}.part"
        # Write then rename: a reader never sees half an image.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(partial, final)
        return name

    def path_of(self, name: str) -> Path | None:
        if not _NAME_RE.match(name):
            return None
        path = self.directory / name
        return path if path.is_file() else None

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        for entry in os.scandir(self.directory):
            is_image = _NAME_RE.match(entry.name)
            is_stale_part = entry.name.endswith(".part")
            if not (is_image or is_stale_part) or not entry.is_file():
                continue
            try:
                if entry.stat().st_mtime + self.ttl_seconds < now:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

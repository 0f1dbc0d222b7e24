"""Images as files in one directory, served by signed links, swept once they expire."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from diffuserve.storage.base import SUFFIXES, ImageGone, LinkInvalid, new_image_name, stop_sweeper
from diffuserve.storage.signing import UrlSigner

logger = logging.getLogger("diffuserve.storage")

_NAME_RE = re.compile(r"^img_[A-Za-z0-9_-]{22,64}\.(png|jpeg|webp)$")
_CONTENT_TYPES = {suffix: content_type for content_type, suffix in SUFFIXES.items()}


@dataclass(frozen=True)
class StoredFile:
    """A verified link's file, with what a response needs to describe it."""

    path: Path
    content_type: str
    expires: int


class LocalImageStore:
    """A flat directory of ``img_<random>.<ext>`` files; a file's mtime starts its life.

    Links are ``<base_url><link_path>/<key>?expires=…&sig=…``: whoever serves
    ``link_path`` calls :meth:`open` with the query to get the file.
    """

    def __init__(self, directory: Path, ttl_seconds: int, signer: UrlSigner, *,
                 link_path: str, sweep_interval: float = 60.0) -> None:
        self.directory = directory
        self.ttl_seconds = ttl_seconds
        self.signer = signer
        self.link_path = link_path.rstrip("/")
        self.sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    # -- ImageStore --------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="diffuserve-sweeper")

    async def stop(self) -> None:
        await stop_sweeper(self._sweeper)

    def put(self, data: bytes, content_type: str) -> str:
        name = new_image_name(content_type)
        final = self.directory / name
        partial = self.directory / f".{name}.part"
        # Write then rename: a reader never sees half an image.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(partial, final)
        return name

    def link(self, key: str, *, base_url: str, now: float) -> str:
        expires, sig = self.signer.sign(key, now)
        query = urlencode({"expires": expires, "sig": sig})
        return f"{base_url.rstrip('/')}{self.link_path}/{key}?{query}"

    # -- serving links -----------------------------------------------------------------

    def open(self, key: str, expires: str | None, sig: str | None, now: float) -> StoredFile:
        """The file behind a link; raises a storage error for a link not to be honoured."""
        valid_until = self.signer.verify(key, expires, sig, now)
        path = self.path_of(key)
        if path is None:
            if not _NAME_RE.match(key):
                raise LinkInvalid("it names no image")
            raise ImageGone()
        return StoredFile(path, _CONTENT_TYPES[path.suffix], valid_until)

    def path_of(self, key: str) -> Path | None:
        if not _NAME_RE.match(key):
            return None
        path = self.directory / key
        return path if path.is_file() else None

    # -- upkeep ------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Delete what has expired by ``now``; return how many files went."""
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

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(self.sweep, time.time())
                if removed:
                    logger.info("swept expired images", extra={"fields": {"removed": removed}})
            except OSError:
                logger.exception("sweeping expired images failed")
            await asyncio.sleep(self.sweep_interval)

"""Finished images become response items: encoded, then inlined or stored and linked."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import Sequence

from PIL import Image

from diffuserve.protocol.common import ImageObject
from diffuserve.storage.base import ImageStore


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


class OutputWriter:
    """Encodes off the event loop, a bounded number at once, and stores what is linked."""

    def __init__(self, store: ImageStore, *, concurrency: int | None = None) -> None:
        self.store = store
        # Encoding is CPU work too: a bound keeps a burst of finished batches from
        # starving the device thread.
        self._encoders = asyncio.Semaphore(concurrency or os.cpu_count() or 2)

    async def items(
        self,
        images: Sequence[Image.Image],
        *,
        response_format: str,
        revised_prompt: str | None,
        base_url: str,
        now: float,
    ) -> list[ImageObject]:
        async with self._encoders:
            pngs = await asyncio.to_thread(lambda: [encode_png(image) for image in images])
        items = []
        for png in pngs:
            item = ImageObject(revised_prompt=revised_prompt)
            if response_format == "b64_json":
                item.b64_json = base64.b64encode(png).decode("ascii")
            else:
                key = await asyncio.to_thread(self.store.put, png, "image/png")
                item.url = self.store.link(key, base_url=base_url, now=now)
            items.append(item)
        return items

"""Storage by key: ``put(bytes, content type) → key``, ``link(key) → url``.

A store keeps generated images until their links expire. The local directory signs its
own links and sweeps expired files; an S3 bucket presigns its links and is swept by the
server or by a lifecycle rule. Stores know nothing of HTTP: their errors below are
mapped to statuses by the HTTP layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Protocol

#: File suffixes of the image types a store accepts.
SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpeg", "image/webp": ".webp"}


def new_image_name(content_type: str) -> str:
    """An unguessable ``img_<random><suffix>`` for an image of ``content_type``."""
    try:
        suffix = SUFFIXES[content_type]
    except KeyError:
        raise ValueError(f"cannot store {content_type!r}") from None
    return f"img_{secrets.token_urlsafe(24)}{suffix}"


async def stop_sweeper(sweeper: asyncio.Task[None] | None) -> None:
    """Cancel a store's background sweeper and wait for it to end."""
    if sweeper is not None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


class ImageStore(Protocol):
    async def start(self) -> None:
        """Begin background upkeep (sweeping), if the store needs any."""
        ...

    async def stop(self) -> None: ...

    def put(self, data: bytes, content_type: str) -> str:
        """Store ``data``; return its key (unguessable). Blocking: call it off the loop."""
        ...

    def link(self, key: str, *, base_url: str, now: float) -> str:
        """A URL that fetches ``key`` without an API key until the link expires.
        ``base_url`` is where this server is reachable, for stores that serve their own."""
        ...


class StorageError(Exception):
    """Base of the errors a store raises: a link it cannot honour, an image it cannot keep."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)


class LinkInvalid(StorageError):
    """The link was not signed by this store, or was changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LinkExpired(StorageError):
    """The link was genuine but its lifetime is over."""

    def __init__(self, ttl_seconds: int) -> None:
        super().__init__(f"the link expired ({ttl_seconds}s lifetime)")
        self.ttl_seconds = ttl_seconds


class ImageGone(StorageError):
    """The link is valid but the image is no longer stored."""

    def __init__(self) -> None:
        super().__init__("the image is no longer stored")


class StorageUnavailable(StorageError):
    """The store could not be reached, or refused to keep an image: a fault of the server
    or its object store, not of the request, which may succeed in ``retry_after`` seconds.

    ``reason`` is for the operator's log: it names the store and the failure, never a
    credential or a link's signature.
    """

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after

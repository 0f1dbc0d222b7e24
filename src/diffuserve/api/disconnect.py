"""Work that stops when its client leaves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from diffuserve.api.errors import ClientClosedRequest

T = TypeVar("T")


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (the engine drops or
    stops the task) and raise :class:`ClientClosedRequest`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        try:
            return task.result()
        finally:
            # The task keeps its exception, whose traceback holds this frame: without
            # the name gone, a failed request's images would wait for the collector.
            del task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientClosedRequest("The client closed the connection.")

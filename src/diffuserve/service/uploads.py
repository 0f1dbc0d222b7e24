"""Uploaded images decoded off the event loop, a bounded number at once, within a budget
of pixels for the whole process.

Reading a request checks its uploads' headers (:mod:`diffuserve.protocol.edits`), so the
pixels a decode will hold are known before it starts. Each decode waits for its pixels
in the process's budget, then runs on one of a few threads of its own; the budget comes
back when the thread is done, even if its client left before (the thread cannot be
stopped, and its memory is held until it ends).
"""

from __future__ import annotations

import asyncio
import os
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from diffuserve.engine.image_memory import return_free_memory, return_memory_when_freed
from diffuserve.protocol.uploads import MAX_REQUEST_PIXELS

T = TypeVar("T")

#: Pixels that decoding may hold in this process at once: two requests of the largest
#: uploads (an RGBA pixel is 4 bytes: about 640 MB, and their conversions).
MAX_DECODING_PIXELS = 2 * MAX_REQUEST_PIXELS
#: Decodes of at least this many pixels hand the memory they freed back to the system.
TRIM_AFTER_PIXELS = 4_000_000


class PixelBudget:
    """A budget of pixels, first come first served: :meth:`acquire` waits for room."""

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.held = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, pixels: int) -> int:
        """Wait for room and take ``pixels`` (at most the whole budget); returns what
        was taken, for :meth:`release`."""
        taken = min(pixels, self.pixels)
        if not self._waiting and self.held + taken <= self.pixels:
            self.held += taken
            return taken
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((taken, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(taken)  # granted just as its waiter was cancelled
            else:
                self._wake()  # a later waiter may fit now that this one is gone
            raise
        return taken

    def release(self, pixels: int) -> None:
        self.held -= pixels
        self._wake()

    def _wake(self) -> None:
        while self._waiting:
            taken, granted = self._waiting[0]
            if granted.done():  # its waiter was cancelled
                self._waiting.popleft()
                continue
            if self.held + taken > self.pixels:
                return
            self._waiting.popleft()
            self.held += taken
            granted.set_result(None)


class UploadDecoder:
    """Runs decodes on ``threads`` worker threads within ``max_pixels`` held at once."""

    def __init__(self, *, threads: int | None = None,
                 max_pixels: int = MAX_DECODING_PIXELS) -> None:
        self.threads = threads or min(4, os.cpu_count() or 2)
        self.budget = PixelBudget(max_pixels)
        self._pool: ThreadPoolExecutor | None = None

    async def decode(self, pixels: int, work: Callable[[], T],
                     images: Callable[[T], Sequence[object]] = lambda _: ()) -> T:
        """``work()`` (a decode of uploads declaring ``pixels``) on a decoding thread;
        after a large one, the memory of ``images(result)`` is handed back to the
        system once they are freed."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="decode")
        taken = await self.budget.acquire(pixels)
        loop = asyncio.get_running_loop()

        def give_back(_: Future[list[T]]) -> None:
            loop.call_soon_threadsafe(self.budget.release, taken)

        def decode_then_trim() -> list[T]:
            # The result goes back in a box emptied on arrival: the worker thread keeps
            # its future (and what it holds) a moment after the loop has the answer.
            try:
                return [work()]
            except BaseException as error:
                # A failed decode's traceback holds the frames that held its pixels:
                # the lines stay for the log, the frames' locals go.
                traceback.clear_frames(error.__traceback__)
                raise
            finally:
                if pixels >= TRIM_AFTER_PIXELS:
                    return_free_memory()  # the conversions' copies are gone by now

        try:
            future = self._pool.submit(decode_then_trim)
        except BaseException:
            self.budget.release(taken)
            raise
        future.add_done_callback(give_back)
        try:
            result = (await asyncio.wrap_future(future)).pop()
        finally:
            # The future keeps a failed decode's exception, whose traceback holds this
            # frame: without the name gone, its images would wait for the collector.
            del future
        if pixels >= TRIM_AFTER_PIXELS:
            return_memory_when_freed(*images(result))
        return result

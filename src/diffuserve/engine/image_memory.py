"""Pillow's image memory, kept for reuse instead of handed back to the system; and the
C library's free memory handed back after work on very large images.

Pillow allocates an image's pixels in blocks (up to 16 MiB each) and, by default, frees a
block as soon as its image goes. A 512² image's block is large enough for the C library
to map it on its own, so freeing it is an ``munmap`` and the next image's block is mapped
and faulted in again: 0.7 ms of one core per image, measured on the request path of this
server. Pillow's own block cache (the documented ``PILLOW_BLOCKS_MAX``) keeps freed
blocks and hands them to the next image instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import weakref
from collections.abc import Callable

from PIL import _imaging

#: Blocks kept for reuse: the images of a few batches in flight. Each kept block is at
#: most one image (7 MiB for the largest sizes served; 1 MiB at 512²).
BLOCKS_MAX = 16


def keep_image_memory(blocks: int = BLOCKS_MAX) -> None:
    """Keep up to ``blocks`` freed image blocks for reuse, unless the operator chose a
    number with ``PILLOW_BLOCKS_MAX`` (which Pillow applied at import)."""
    if "PILLOW_BLOCKS_MAX" not in os.environ:
        _imaging.set_blocks_max(blocks)


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def return_free_memory() -> None:
    """Hand the C library's free memory back to the system (glibc's ``malloc_trim``).

    Decoding a 40 MP upload allocates hundreds of MB in blocks above glibc's adaptive
    mmap threshold, which then come from the thread's arena and, once freed, stay there:
    eight such edits left a server at 6 GB of RSS that it no longer used. A trim after
    such work returns it (a few milliseconds); smaller images never ask for one.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


_trim_pending = threading.Lock()


def _trim_in_background() -> None:
    """One trim on a thread of its own (tens of ms for gigabytes: never on the event
    loop, which may be the thread that dropped the last reference); one at a time."""
    if _MALLOC_TRIM is None or not _trim_pending.acquire(blocking=False):
        return

    def trim() -> None:
        try:
            return_free_memory()
        finally:
            _trim_pending.release()

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()


def return_memory_when_freed(*images: object) -> None:
    """Once each of ``images`` is freed (its request no longer needs it, whichever
    thread lets go last), hand the free memory back to the system."""
    for image in images:
        weakref.finalize(image, _trim_in_background)

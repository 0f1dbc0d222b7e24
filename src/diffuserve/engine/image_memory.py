"""Pillow's image memory, kept for reuse instead of handed back to the system.

Pillow allocates an image's pixels in blocks (up to 16 MiB each) and, by default, frees a
block as soon as its image goes. A 512² image's block is large enough for the C library
to map it on its own, so freeing it is an ``munmap`` and the next image's block is mapped
and faulted in again: 0.7 ms of one core per image, measured on the request path of this
server. Pillow's own block cache (the documented ``PILLOW_BLOCKS_MAX``) keeps freed
blocks and hands them to the next image instead.
"""

from __future__ import annotations

import os

from PIL import _imaging

#: Blocks kept for reuse: the images of a few batches in flight. Each kept block is at
#: most one image (7 MiB for the largest sizes served; 1 MiB at 512²).
BLOCKS_MAX = 16


def keep_image_memory(blocks: int = BLOCKS_MAX) -> None:
    """Keep up to ``blocks`` freed image blocks for reuse, unless the operator chose a
    number with ``PILLOW_BLOCKS_MAX`` (which Pillow applied at import)."""
    if "PILLOW_BLOCKS_MAX" not in os.environ:
        _imaging.set_blocks_max(blocks)

"""PNG encoding on every core: the response's one piece of work that no pipeline does.

A PNG's pixels are one zlib stream, so an encoder compresses on one core, and Pillow's
also tries five filters on every row. Here each row is "Up"-filtered at once with numpy
and horizontal bands of rows are deflated in parallel by Intel's ISA-L (``isal``: the
same deflate format, 4–6× faster than zlib at the size zlib's level 1 reaches, and it
releases the GIL), each band ending on a byte boundary (a sync flush) so that the bands
join into one valid stream, as ``pigz`` does. The result is an ordinary PNG that every
decoder reads. Levels 1–3 are ISA-L's; 0 (stored) and 4–9 are zlib's, for whoever trades
time for smaller files. Modes other than 8-bit RGB and RGBA go through Pillow.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from isal import isal_zlib
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types by Pillow mode.
COLOUR_TYPES = {"RGB": 2, "RGBA": 6}
#: Below this many bytes of filtered pixels, one band: threads would cost more.
MIN_BAND_BYTES = 128 * 1024
#: The zlib header of a deflate stream with a 32 KiB window (its level bits say "fast").
ZLIB_HEADER = b"\x78\x01"
FILTER_NONE, FILTER_UP = 0, 2
#: Levels up to this are ISA-L's own (1–3); 0 stores and 4–9 are zlib's, which spend
#: 1.2–3× the time of ISA-L for files 20–25 % smaller.
ISAL_MAX_LEVEL = 3

_workers = max(1, os.cpu_count() or 1)
_pool = ThreadPoolExecutor(max_workers=_workers, thread_name_prefix="diffuserve-png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = isal_zlib.crc32(data, isal_zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _deflate(band: memoryview, level: int, last: bool) -> bytes:
    """``band`` as raw deflate (no header): by ISA-L at levels 1–3, else by zlib."""
    fast = 1 <= level <= ISAL_MAX_LEVEL
    compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15) if fast \
        else zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(band) + compressor.flush(
        zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _bands(height: int, row_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of whole rows, one per core, none under ``MIN_BAND_BYTES``."""
    total = height * row_bytes
    count = max(1, min(_workers, total // MIN_BAND_BYTES, height))
    stride = -(-height // count) * row_bytes
    return [(start, min(start + stride, total)) for start in range(0, total, stride)]


def encode_png(image: Image.Image, level: int) -> bytes:
    """``image`` as PNG bytes, deflated at zlib ``level`` (0–9) on every core."""
    colour_type = COLOUR_TYPES.get(image.mode)
    if colour_type is None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False, compress_level=level)
        return buffer.getvalue()
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    # Each row: its filter byte, then its bytes minus those of the row above ("Up"; the
    # first row has none above and is stored as is).
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[0, 0], filtered[1:, 0] = FILTER_NONE, FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    raw = memoryview(filtered.reshape(-1).data)
    bands = _bands(height, filtered.shape[1])
    if len(bands) == 1:
        parts = [_deflate(raw, level, last=True)]
    else:
        # The pool deflates the first bands; this thread the last, instead of waiting.
        head = [_pool.submit(_deflate, raw[start:end], level, False)
                for start, end in bands[:-1]]
        tail = _deflate(raw[bands[-1][0]:], level, last=True)
        parts = [future.result() for future in head] + [tail]
    stream = ZLIB_HEADER + b"".join(parts) + struct.pack(">I", isal_zlib.adler32(raw))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")

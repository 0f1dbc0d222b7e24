"""An invisible watermark in an image's pixels: 64 bits that name the server, meant to
outlive what strips metadata (a C2PA manifest with it) and a re-encode as JPEG.

The scheme is invisible-watermark's ``dwtDctSvd`` (the ``imwatermark`` package, whose
``dwtDct`` method diffusers uses for SDXL): the first level of a Haar wavelet transform
of the image's U (blue-difference) channel, cut into 4×4 blocks; each block carries one
bit of the payload (the blocks shuffled among the bits) in the remainder of its largest
singular value modulo :data:`STRENGTH` (a quarter or three quarters of it). Reading
takes the same remainder of every block and the vote of the blocks of each bit.

It is written here on numpy rather than imported, for reasons measured when it was
chosen (see docs/PROVENANCE.md): the package requires opencv-python (an 80 MB wheel
that needs the system's libGL, which slim container images lack, and that clashes with
opencv-python-headless) for a colour conversion and a 4×4 DCT, and imports torch on
import; it runs a Python loop per block (45 ms for a 512² image, where this takes a
few); its ``dwtDct`` method lost the payload to JPEG quality 85 on every photo tried
(23–36 of 64 bits wrong, which is chance); and it decodes bits but decides nothing, so
the detection threshold is ours anyway. The DCT of its blocks is left out: an
orthonormal transform keeps a block's singular values, so the largest is the same with
or without it. Two changes: the blocks are shuffled among the bits (in turn, a flat
background showed stripes), and where a mark would push a channel past 0 or 255 the
pixel's grey level moves instead (which keeps U: white carries the mark too, and JPEG
then keeps it on flat artwork). Pixels stay in floating point until the one rounding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Bits carried.
PAYLOAD_BITS = 64
#: The quantisation step of a block's largest singular value (invisible-watermark's
#: default for ``dwtDctSvd``): larger survives more and shows more.
STRENGTH = 36.0
#: Side of a block of the wavelet's low band (8 pixels of the image).
BLOCK = 4
#: Pixels a block covers in the image (its side).
BLOCK_PIXELS = 2 * BLOCK
#: Fewest blocks an image must have to carry the payload: 4 votes per bit (128×128).
MIN_BLOCKS = 4 * PAYLOAD_BITS
#: The shuffle of the blocks among the bits (any fixed number: marks and readings agree).
SCATTER_SEED = 0x5EED_D1FF
#: Rounds of the power iteration that finds a block's largest singular value.
POWER_ROUNDS = 12
#: Most wrong bits still read as the payload. A picture without the mark reads bits
#: that agree with the payload by chance: 10 or fewer of 64 wrong happens with
#: probability 1e-8 (binomial); a flat picture reads one bit everywhere, 24 or more wrong
#: against a payload of 24–40 ones.
MAX_BIT_ERRORS = 10
#: A payload has between these many ones, so that no flat picture comes near it.
BALANCE = (24, 40)

# BT.601 (analog YUV, as OpenCV's COLOR_RGB2YUV): U = 0.492 (B - Y) + 128, so that U is
# positive (a singular value has no sign) and grey sits mid-way.
_Y = np.array([0.299, 0.587, 0.114])
_U_SCALE = 0.492
# What a change of U does to R, G and B at constant Y and V (the inverse's U column).
_U_TO_RGB = np.array([0.0, -0.395, 2.032])


def payload_for(server_key: bytes) -> np.ndarray:
    """The 64 bits that name a server: a digest of ``server_key`` (the public key of
    its signing certificate), drawn again until its ones are :data:`BALANCE`."""
    counter = 0
    while True:
        digest = hashlib.sha256(b"diffuserve watermark\0%d\0" % counter + server_key).digest()
        bits: np.ndarray = np.unpackbits(np.frombuffer(digest[:PAYLOAD_BITS // 8], np.uint8))
        if BALANCE[0] <= int(bits.sum()) <= BALANCE[1]:
            return bits
        counter += 1


@dataclass(frozen=True)
class Reading:
    """What reading an image for the payload found: ``bit_errors`` of 64 (None: the
    image is too small to carry it)."""

    bit_errors: int | None

    @property
    def detected(self) -> bool:
        return self.bit_errors is not None and self.bit_errors <= MAX_BIT_ERRORS


def _blocks_of(image: Image.Image) -> tuple[int, int]:
    """Rows and columns of blocks the image has (its right and bottom edges beyond the
    last whole block carry nothing)."""
    return image.height // BLOCK_PIXELS, image.width // BLOCK_PIXELS


def can_carry(image: Image.Image) -> bool:
    rows, cols = _blocks_of(image)
    return rows * cols >= MIN_BLOCKS


def _low_band_blocks(u: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The Haar low band of ``u`` (each 2×2 square's sum over 2), cut into blocks:
    (4, 4, rows·cols), the blocks along the last axis so that the arithmetic below runs
    along whole rows of numbers."""
    height, width = rows * BLOCK_PIXELS, cols * BLOCK_PIXELS
    low = (u[0:height:2, 0:width:2] + u[1:height:2, 0:width:2]
           + u[0:height:2, 1:width:2] + u[1:height:2, 1:width:2]) / 2.0
    return np.ascontiguousarray(
        low.reshape(rows, BLOCK, cols, BLOCK).transpose(1, 3, 0, 2).reshape(BLOCK, BLOCK, -1),
        dtype=np.float64)


def _largest_singular(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each block's largest singular value with its left and right vectors, by power
    iteration on BᵀB (20× numpy's SVD of many 4×4 matrices, which loops in LAPACK).
    U's offset of 128 makes a block nearly of rank one (its largest value is at least
    8·17, the rest a texture's), so a dozen rounds reach the value to 1e-9."""
    gram = np.einsum("kin,kjn->ijn", blocks, blocks)
    right = np.full(blocks.shape[1:], 0.5)  # the flat block's own vector
    for _ in range(POWER_ROUNDS):
        right = np.einsum("ijn,jn->in", gram, right)
        right /= np.maximum(np.sqrt((right * right).sum(axis=0)), 1e-12)
    image = np.einsum("ijn,jn->in", blocks, right)
    largest = np.sqrt((image * image).sum(axis=0))
    return largest, image / np.maximum(largest, 1e-12), right


def _bit_of_block(blocks: int, bits: int) -> np.ndarray:
    """Which bit each block carries: each bit as often as the others, the blocks of one
    bit scattered by a fixed shuffle (in turn, row by row, a bit would fall in the same
    column of every row of a 512 px image, and stripes show on a flat background)."""
    order: np.ndarray = np.random.default_rng(SCATTER_SEED).permutation(blocks) % bits
    return order


def _channels(image: Image.Image) -> list[np.ndarray]:
    """R, G and B as separate float32 planes (arithmetic on a 3-wide last axis is
    strided and several times slower)."""
    pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    return [pixels[..., index].astype(np.float32) for index in range(3)]


def _u_plane(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    u: np.ndarray = _U_SCALE * ((1 - _Y[2]) * blue - _Y[0] * red - _Y[1] * green) + 128.0
    return u


def embed(image: Image.Image, payload: np.ndarray) -> Image.Image:
    """``image`` with ``payload`` (bits) in its pixels; an image too small to carry it
    (:func:`can_carry`) is returned as it is. Alpha is kept as it is."""
    rows, cols = _blocks_of(image)
    if rows * cols < MIN_BLOCKS or image.mode not in ("RGB", "RGBA"):
        return image
    red, green, blue = _channels(image)
    largest, left, right = _largest_singular(
        _low_band_blocks(_u_plane(red, green, blue), rows, cols))
    bits = payload[_bit_of_block(len(largest), len(payload))]
    target = (np.floor(largest / STRENGTH) + 0.25 + 0.5 * bits) * STRENGTH
    # The block moved along its largest singular pair only: B + (s' - s) u vᵀ.
    change = (target - largest) * left[:, None, :] * right[None, :, :]
    # Back to the image: a low-band change of d is d/2 on each pixel of its 2×2 square,
    # and a change of U is one of G and B at constant Y and V.
    du = (change.reshape(BLOCK, BLOCK, rows, cols).transpose(2, 0, 3, 1).reshape(
        rows * BLOCK, cols * BLOCK) / 2.0).astype(np.float32)
    height, width = rows * BLOCK_PIXELS, cols * BLOCK_PIXELS
    for plane, weight in ((green, _U_TO_RGB[1]), (blue, _U_TO_RGB[2])):
        step = weight * du
        for dy in (0, 1):
            for dx in (0, 1):
                plane[dy:height:2, dx:width:2] += step
    # Where a channel leaves 0–255 (white's blue cannot rise), the pixel's three channels
    # move together instead of clipping: U is B − Y, which a grey shift leaves as it is.
    highest = np.maximum(np.maximum(red, green), blue)
    lowest = np.minimum(np.minimum(red, green), blue)
    shift = np.maximum(-lowest, 0.0) - np.maximum(highest - 255.0, 0.0)
    marked = np.array(image)  # a copy: alpha as it is
    for index, plane in enumerate((red, green, blue)):
        plane += shift
        np.rint(plane, out=plane)
        marked[..., index] = np.clip(plane, 0, 255)
    return Image.fromarray(marked, image.mode)


def read(image: Image.Image, payload: np.ndarray) -> Reading:
    """How far the bits ``image`` carries are from ``payload``."""
    rows, cols = _blocks_of(image)
    if rows * cols < MIN_BLOCKS:
        return Reading(None)
    largest, _, _ = _largest_singular(_low_band_blocks(_u_plane(*_channels(image)), rows, cols))
    votes = (np.mod(largest, STRENGTH) > STRENGTH / 2).astype(np.float64)
    which = _bit_of_block(len(largest), len(payload))
    share = np.bincount(which, weights=votes, minlength=len(payload)) / np.bincount(
        which, minlength=len(payload))
    bits = (share > 0.5).astype(np.uint8)
    return Reading(int(np.count_nonzero(bits != payload)))

"""Pictures and file surgery for the content provenance tests and benchmarks: a
photo-like picture, metadata stripped by re-encoding, a tampered JPEG, c2pa's report."""

from __future__ import annotations

import io
import json
from typing import Any

import c2pa
import numpy as np
from PIL import Image

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """A picture with a photograph's statistics: colour noise whose power falls as 1/f²
    (as natural images' does), shaded by a soft light from one side. No two seeds alike."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    falloff = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(width, height))
    channels = []
    base = rng.normal(size=(height, width // 2 + 1)) + 1j * rng.normal(
        size=(height, width // 2 + 1))
    for _ in range(3):
        own = rng.normal(size=base.shape) + 1j * rng.normal(size=base.shape)
        field = np.fft.irfft2((base + 0.5 * own) * falloff, s=(height, width))
        channels.append((field - field.mean()) / (field.std() + 1e-9))
    pixels = np.stack(channels, axis=-1) * 38 + rng.uniform(90, 160, size=3)
    light = np.linspace(-25, 25, width)[None, :, None]
    return Image.fromarray(np.clip(pixels + light, 0, 255).astype(np.uint8), "RGB")


def encoded(image: Image.Image, fmt: str, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format=fmt.upper(), quality=quality)
    return buffer.getvalue()


def reencoded(data: bytes, fmt: str = "jpeg", quality: int = 85) -> bytes:
    """The file's pixels (alpha dropped) encoded again at the same size, without any of
    its metadata: what a site that strips metadata and recompresses serves."""
    with Image.open(io.BytesIO(data)) as image:
        return encoded(image.convert("RGB"), fmt, quality)


def tampered_jpeg(data: bytes) -> bytes:
    """The JPEG with two bytes of its entropy-coded data flipped (its pixels changed, its
    manifest not)."""
    start = data.rindex(b"\xff\xda")  # the last start of scan
    length = int.from_bytes(data[start + 2:start + 4], "big")
    position = start + 2 + length + (len(data) - start - length) // 2
    changed = bytearray(data)
    for offset in (0, 1):
        if changed[position + offset] not in (0xFF, 0x00):
            changed[position + offset] ^= 0x01
    return bytes(changed)


def manifest_report(data: bytes, fmt: str) -> tuple[str, dict[str, Any]]:
    """c2pa's validation state of the file and its active manifest (as c2pa's JSON)."""
    reader = c2pa.Reader(MIME_TYPES[fmt], io.BytesIO(data))
    try:
        store = json.loads(reader.json())
        state = str(reader.get_validation_state())
    finally:
        reader.close()
    return state, store["manifests"][store["active_manifest"]]


def actions_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [action for assertion in manifest["assertions"]
            if assertion["label"].startswith("c2pa.actions")
            for action in assertion["data"]["actions"]]

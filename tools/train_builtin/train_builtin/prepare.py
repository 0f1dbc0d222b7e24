"""``prepare-data``: fetch, verify, unpack, caption, render and encode the training set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from train_builtin.data import Entry, extract, fetch_tarball


def render(path: Path, size: int) -> np.ndarray:
    """The RGBA emoji composited on white and resized with a Lanczos filter."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    rgb = canvas.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


def render_all(data: Path, entries: list[Entry], size: int) -> np.ndarray:
    """Every image of ``data/assets`` composited on white at ``size`` (:func:`render`)."""
    return np.stack([render(data / "assets" / entry.file, size)
                     for entry in tqdm(entries, desc=f"render {size}px", unit="img")])


def render_rgba(path: Path, size: int) -> np.ndarray:
    """The RGBA emoji with straight alpha, resized with a Lanczos filter on premultiplied
    colour (so that transparent pixels' colours do not bleed into the edge)."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.convert("RGBa").resize((size, size), Image.Resampling.LANCZOS)
        rgba = rgba.convert("RGBA")
    return np.asarray(rgba, dtype=np.uint8)


def rgba_images(data: Path, entries: list[Entry], size: int) -> np.ndarray:
    """Every image as straight-alpha RGBA at ``size``, cached in the data folder."""
    cache = data / f"images_{size}_rgba.npy"
    if cache.is_file():
        cached = np.load(cache)
        if cached.shape == (len(entries), size, size, 4):
            return cached
    pixels = np.stack([render_rgba(data / "assets" / entry.file, size)
                       for entry in tqdm(entries, desc=f"render {size}px RGBA", unit="img")])
    np.save(cache, pixels)
    return pixels


def encode_captions(entries: list[Entry]) -> dict[str, np.ndarray]:
    """MiniLM token states of every caption, of the empty caption, and of every concept
    shown by several images: training sometimes swaps a caption for its concept ("a
    woman swimming, medium skin tone" → "a woman swimming"), so that a prompt that names
    no skin tone is drawn in any of them, seed by seed."""
    from train_builtin.text import TextEncoder

    encoder = TextEncoder()
    encoded = encoder.encode([entry.caption for entry in entries])
    empty = encoder.encode([""])
    shared = sorted(concept for concept, count in
                    Counter(entry.concept for entry in entries).items() if count > 1)
    concepts = encoder.encode(shared)
    row = {concept: i for i, concept in enumerate(shared)}

    def half(states: Any, mask: Any) -> np.ndarray:
        # Padding is masked out of cross-attention: zeroed, it compresses away.
        return (states * mask.unsqueeze(-1)).numpy().astype(np.float16)

    return {
        "states": half(encoded.states, encoded.mask),
        "mask": encoded.mask.numpy().astype(np.int8),
        "pooled": encoded.pooled.numpy().astype(np.float32),
        # The unconditional input of classifier-free guidance, so that training needs no
        # text encoder (e.g. on a GPU machine without the MiniLM package).
        "empty_states": empty.states[0].numpy().astype(np.float16),
        "empty_mask": empty.mask[0].numpy().astype(np.int8),
        "concept_states": half(concepts.states, concepts.mask),
        "concept_mask": concepts.mask.numpy().astype(np.int8),
        "concept_index": np.array([row.get(entry.concept, -1) for entry in entries],
                                  dtype=np.int32),
    }


def prepare(cache_dir: Path, out_dir: Path, sizes: tuple[int, ...] = (64,),
            encode: bool = True, limit: int | None = None) -> list[Entry]:
    """Everything training needs, in ``out_dir``; ``limit`` keeps the first N images
    (for smoke tests)."""
    tarball = fetch_tarball(cache_dir)
    entries = extract(tarball, out_dir)
    if limit is not None:
        entries = entries[:limit]
    for size in sizes:
        np.save(out_dir / f"images_{size}.npy", render_all(out_dir, entries, size))
    if encode:
        np.savez_compressed(out_dir / "captions_minilm.npz", **encode_captions(entries))
    (out_dir / "prepared.json").write_text(json.dumps(
        {"images": len(entries), "sizes": list(sizes), "encoded": encode}, indent=2))
    return entries

"""``prepare-data``: fetch, verify, unpack, caption, render and encode the training set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from diffuserve.training.data import Entry, extract, fetch_tarball


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


def prepare(cache_dir: Path, out_dir: Path, sizes: tuple[int, ...] = (64,),
            encode: bool = True, limit: int | None = None) -> list[Entry]:
    """Everything training needs, in ``out_dir``; ``limit`` keeps the first N images
    (for smoke tests)."""
    tarball = fetch_tarball(cache_dir)
    entries = extract(tarball, out_dir)
    if limit is not None:
        entries = entries[:limit]
    for size in sizes:
        pixels = np.stack([
            render(out_dir / "assets" / entry.file, size)
            for entry in tqdm(entries, desc=f"render {size}px", unit="img")
        ])
        np.save(out_dir / f"images_{size}.npy", pixels)
    if encode:
        from diffuserve.training.text import TextEncoder

        encoded = TextEncoder().encode([entry.caption for entry in entries])
        np.savez(
            out_dir / "captions_minilm.npz",
            states=encoded.states.numpy().astype(np.float16),
            mask=encoded.mask.numpy().astype(np.int8),
            pooled=encoded.pooled.numpy().astype(np.float32),
        )
    (out_dir / "prepared.json").write_text(json.dumps(
        {"images": len(entries), "sizes": list(sizes), "encoded": encode}, indent=2))
    return entries

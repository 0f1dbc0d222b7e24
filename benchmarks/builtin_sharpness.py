"""Sharpness of the built-in model at large sizes, against the data's own images.

The autoencoder decodes a 64 px subject; the artwork the model learnt from is 256 px,
and a detail decoder (where the pipeline has one) draws the subject at 256 px. For
``--count`` sampled captions (seed 0, the sample of ``builtin_quality.py``) this draws
each at ``--size`` (default 1024²) and compares its sharpness with that of the captioned
artwork resized to the same size the same way (Lanczos, on white): the artwork at its
full 256 px (what a model with full detail would show, "no visible blur beyond what the
artwork itself has") and the artwork shrunk to 64 px first (what a perfect 64 px model
shows). The decoders alone are measured too: the sampled images' own latents decoded at
``--size``, with their sharpness and their PSNR against the 256 px artwork (both at
256 px), which tells detail that is the artwork's from detail that is invented.

Sharpness is the share of the luminance's spectral energy (its mean removed) above 32
cycles per image — detail finer than a 64 px drawing can carry — measured on each
picture shrunk to the artwork's 256 px. A ratio of 1.0 to the 256 px artwork means as
much fine detail as the data has; an upscaled 64 px image has almost none. (Gradient
measures were tried first: Lanczos ringing makes an upscaled 64 px image score as sharp
as the original, so they cannot see this blur.)

    python benchmarks/builtin_sharpness.py [--count 50] [--size 1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from builtin_quality import DEFAULT_DATA, Generator  # noqa: E402
from train_builtin.data import load_manifest  # noqa: E402
from train_builtin.prepare import render  # noqa: E402

from diffuserve import builtin  # noqa: E402

MEASURE_SIDE = 256
#: Cycles per image above which energy counts as fine detail: a 64 px drawing's Nyquist.
CUTOFF = 32


def sharpness(image: Image.Image) -> float:
    """The share of the luminance's spectral energy above CUTOFF cycles per image, at
    MEASURE_SIDE px (Lanczos)."""
    side = (MEASURE_SIDE, MEASURE_SIDE)
    grey = np.asarray(image.convert("L").resize(side, Image.Resampling.LANCZOS),
                      dtype=np.float64)
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    frequencies = np.fft.fftfreq(MEASURE_SIDE) * MEASURE_SIDE
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    total = power.sum()
    return float(power[radius > CUTOFF].sum() / total) if total > 0 else 0.0


def psnr(found: Image.Image, want: Image.Image) -> float:
    """PSNR (dB) of ``found`` against ``want``, both at MEASURE_SIDE px (Lanczos)."""
    side = (MEASURE_SIDE, MEASURE_SIDE)
    a = np.asarray(found.convert("RGB").resize(side, Image.Resampling.LANCZOS), np.float64)
    b = np.asarray(want.convert("RGB").resize(side, Image.Resampling.LANCZOS), np.float64)
    error = float(np.mean((a - b) ** 2))
    return 10 * float(np.log10(255.0 ** 2 / error)) if error > 0 else float("inf")


def decoded(pipe: Any, images: np.ndarray, size: int) -> list[Image.Image]:
    """Each 64 px image's latents (posterior mode) decoded as the pipeline presents a
    finished image at ``size``²."""
    import torch

    vae = pipe.vae
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
        latents = latents * vae.config.scaling_factor
        return [pipe.decode_preview(latents[i:i + 1], size, size)
                for i in range(len(latents))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=builtin.WEIGHTS_DIR)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    entries = load_manifest(args.data)
    sample = random.Random(0).sample(entries, min(200, len(entries)))[: args.count]
    generate = Generator(args)
    started = time.perf_counter()
    drawn = generate([(e.caption, (i,)) for i, e in enumerate(sample)], args.size)
    seconds = time.perf_counter() - started
    side = (args.size, args.size)
    where = {e.file: i for i, e in enumerate(entries)}
    opaque = np.load(args.data / "images_64.npy", mmap_mode="r")
    own = decoded(generate.backend.pipeline,
                  np.stack([np.asarray(opaque[where[e.file]]) for e in sample]), args.size)
    rows = []
    for entry, found, reconstruction in zip(sample, drawn, own, strict=True):
        path = args.data / "assets" / entry.file
        artwork = Image.fromarray(render(path, 256))
        full = artwork.resize(side, Image.Resampling.LANCZOS)
        small = Image.fromarray(render(path, 64)).resize(side, Image.Resampling.LANCZOS)
        rows.append({"caption": entry.caption, "model": sharpness(found[0]),
                     "artwork_256": sharpness(full), "artwork_64": sharpness(small),
                     "decoder": sharpness(reconstruction),
                     "decoder_psnr": psnr(reconstruction, artwork),
                     "artwork_64_psnr": psnr(small, artwork)})
    decoder = statistics.fmean(r["decoder"] for r in rows)
    decoder_psnr = statistics.fmean(r["decoder_psnr"] for r in rows)
    small_psnr = statistics.fmean(r["artwork_64_psnr"] for r in rows)
    model = statistics.fmean(r["model"] for r in rows)
    full_s = statistics.fmean(r["artwork_256"] for r in rows)
    small_s = statistics.fmean(r["artwork_64"] for r in rows)
    ratios = [r["model"] / r["artwork_256"] for r in rows if r["artwork_256"] > 0]
    print(f"pipeline {args.pipeline}  {len(rows)} captions at {args.size}²  "
          f"({seconds / max(1, len(rows)):.2f} s/image)")
    print(f"energy above {CUTOFF} cycles/image: model {model:.4f}, artwork 256 px "
          f"{full_s:.4f}, artwork 64 px {small_s:.4f}")
    print(f"model / artwork 256 px: mean {model / full_s:.3f}, median per image "
          f"{statistics.median(ratios):.3f}  (artwork 64 px / 256 px: {small_s / full_s:.3f})")
    print(f"decoders alone, the images' own latents: energy {decoder:.4f} "
          f"({decoder / full_s:.3f} of the artwork's), PSNR {decoder_psnr:.2f} dB against "
          f"the 256 px artwork (the artwork shrunk to 64 px: {small_psnr:.2f} dB)")
    if args.json:
        args.json.write_text(json.dumps({
            "pipeline": str(args.pipeline), "size": args.size, "count": len(rows),
            "model": model, "artwork_256": full_s, "artwork_64": small_s,
            "ratio": model / full_s, "median_ratio": statistics.median(ratios),
            "ceiling_64_ratio": small_s / full_s, "decoder": decoder,
            "decoder_ratio": decoder / full_s, "decoder_psnr": decoder_psnr,
            "artwork_64_psnr": small_psnr, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

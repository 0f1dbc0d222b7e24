"""Sharpness of the built-in model at large sizes, against the data's own images.

The model draws a 64 px subject and scales it up to the requested size; the artwork it
learnt from is 256 px. For ``--count`` sampled captions (seed 0, the sample of
``builtin_quality.py``) this draws each at ``--size`` (default 1024²) and compares its
sharpness with that of the captioned artwork resized to the same size the same way
(Lanczos, on white): the artwork at its full 256 px (what a model with full detail
would show, "no visible blur beyond what the artwork itself has") and the artwork shrunk
to 64 px first (what a perfect 64 px model shows).

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
    rows = []
    for entry, found in zip(sample, drawn, strict=True):
        path = args.data / "assets" / entry.file
        full = Image.fromarray(render(path, 256)).resize(side, Image.Resampling.LANCZOS)
        small = Image.fromarray(render(path, 64)).resize(side, Image.Resampling.LANCZOS)
        rows.append({"caption": entry.caption, "model": sharpness(found[0]),
                     "artwork_256": sharpness(full), "artwork_64": sharpness(small)})
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
    if args.json:
        args.json.write_text(json.dumps({
            "pipeline": str(args.pipeline), "size": args.size, "count": len(rows),
            "model": model, "artwork_256": full_s, "artwork_64": small_s,
            "ratio": model / full_s, "median_ratio": statistics.median(ratios),
            "ceiling_64_ratio": small_s / full_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

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

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builtin_quality import (  # noqa: E402
    Generator,
    add_generator_options,
    decode_own_latents,
)
from train_builtin.data import load_manifest  # noqa: E402
from train_builtin.prepare import render  # noqa: E402

from tests.support.images import CUTOFF, MEASURE_SIDE, fine_detail  # noqa: E402


def psnr(found: Image.Image, want: Image.Image) -> float:
    """PSNR (dB) of ``found`` against ``want``, both at MEASURE_SIDE px (Lanczos)."""
    side = (MEASURE_SIDE, MEASURE_SIDE)
    a = np.asarray(found.convert("RGB").resize(side, Image.Resampling.LANCZOS), np.float64)
    b = np.asarray(want.convert("RGB").resize(side, Image.Resampling.LANCZOS), np.float64)
    error = float(np.mean((a - b) ** 2))
    return 10 * float(np.log10(255.0 ** 2 / error)) if error > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generator_options(parser, batch=8)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    entries = load_manifest(args.data)
    sample = random.Random(0).sample(entries, min(200, len(entries)))[: args.count]
    generate = Generator(args)
    started = time.perf_counter()
    drawn = generate([(e.caption, (i,)) for i, e in enumerate(sample)], args.size)
    seconds = time.perf_counter() - started
    side = (args.size, args.size)
    own = decode_own_latents(generate.backend.pipeline, args.data, entries, sample,
                             args.size)
    rows = []
    for entry, found, reconstruction in zip(sample, drawn, own, strict=True):
        path = args.data / "assets" / entry.file
        artwork = Image.fromarray(render(path, 256))
        full = artwork.resize(side, Image.Resampling.LANCZOS)
        small = Image.fromarray(render(path, 64)).resize(side, Image.Resampling.LANCZOS)
        rows.append({"caption": entry.caption, "model": fine_detail(found[0]),
                     "artwork_256": fine_detail(full), "artwork_64": fine_detail(small),
                     "decoder": fine_detail(reconstruction),
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

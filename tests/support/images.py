"""Measures of pictures shared by the built-in model's tests and benchmarks."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The side pictures are measured at: the built-in model's artwork's own.
MEASURE_SIDE = 256
#: Cycles per image above which energy counts as fine detail: a 64 px drawing's Nyquist.
CUTOFF = 32


def fine_detail(image: Image.Image) -> float:
    """The share of the luminance's spectral energy (its mean removed) above CUTOFF cycles
    per image, at MEASURE_SIDE px (Lanczos): detail finer than a 64 px drawing can carry.
    (Gradient measures cannot see this blur: Lanczos ringing makes an enlarged 64 px
    picture score as sharp as the original.)"""
    side = (MEASURE_SIDE, MEASURE_SIDE)
    grey = np.asarray(image.convert("L").resize(side, Image.Resampling.LANCZOS),
                      dtype=np.float64)
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    frequencies = np.fft.fftfreq(MEASURE_SIDE) * MEASURE_SIDE
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    total = power.sum()
    return float(power[radius > CUTOFF].sum() / total) if total > 0 else 0.0

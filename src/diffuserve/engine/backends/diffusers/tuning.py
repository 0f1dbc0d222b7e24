"""Tuning at load, before a model counts as ready: the images per call measured
(``max_batch_size = "auto"``), the compiled pipeline warmed at every size and batch size
it will draw (``compile``), the denoiser moved to ONNX Runtime (``runtime = "onnx"``).

Each measures or warms with probe calls: short calls (2 steps) made through the backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from diffuserve.config import ModelSpec
from diffuserve.engine.errors import ModelLoadFailed

logger = logging.getLogger(__name__)

#: The most images per call ``max_batch_size = "auto"`` chooses.
MAX_AUTO_BATCH = 64

#: One probe call: ``probe(images, width, height)`` draws ``images`` images at that size.
Probe = Callable[[int, int, int], None]


def measure_batch(probe: Probe, side: int, device: str, model: str) -> int:
    """``max_batch_size = "auto"``: the images per call for this model on this device.

    On CUDA, as many as the free memory holds at the native size (``side``), from the
    peak memory of a call of one image and of two (the second image's share is what each
    more costs), with 20 % kept free. Elsewhere, where memory is not the limit but
    compute is, the batch after which a bigger one stops saving 10 % per image."""
    import torch

    started = time.perf_counter()
    if device == "cuda":
        baseline = torch.cuda.memory_allocated()  # the weights
        peaks = []
        for images in (1, 2):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            probe(images, side, side)
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated())
        per_image = max(peaks[1] - peaks[0], 1)
        fixed = max(0, peaks[0] - baseline - per_image)  # a call's cost whatever its size
        free, _ = torch.cuda.mem_get_info()
        chosen = max(1, min(MAX_AUTO_BATCH, int(0.8 * free - fixed) // per_image))
        how: dict[str, object] = {"per_image_bytes": per_image, "free_bytes": free}
    else:
        probe(1, side, side)  # warm: the first call is slow
        chosen, best, seconds = 1, float("inf"), {}
        for images in (1, 2, 4, 8, 16):
            begun = time.perf_counter()
            probe(images, side, side)
            cost = (time.perf_counter() - begun) / images
            seconds[images] = round(cost, 4)
            if cost > 0.9 * best:
                break
            chosen, best = images, cost
        how = {"seconds_per_image": seconds}
    logger.info("batch size measured", extra={"fields": {
        "model": model, "max_batch_images": chosen, **how,
        "seconds": round(time.perf_counter() - started, 1)}})
    return chosen


def compile_and_warm(pipeline: Any, spec: ModelSpec, device: str, *, native_resolution: int,
                     drawn_at: Callable[[int, int], tuple[int, int]], max_images: int,
                     probe: Probe, adapters: bool = False) -> None:
    """Compile, then draw every size to be warmed (``drawn_at`` the size each output size
    is drawn at) at every batch size up to ``max_images``, so that compilation happens
    now and not in front of a request.

    Two batch sizes are not enough: torch.compile generalises over the batch size
    from the second one it sees, but the traced graph keeps guards on it wherever the
    code branched on it — the convolutions' backend, chosen by batch size (on a CPU
    it changes at 16 of the UNet's doubled batch), or diffusers' upsampling past 64 —
    and a batch outside a graph's guards is compiled again when it comes. Every batch
    size drawn once compiles each such range now (a few graphs) and, with CUDA
    graphs, records each size's graph now too. A denoiser that takes ``adapters`` is
    compiled for them (see :func:`~diffuserve.engine.backends.compilation.compile_pipeline`)."""
    from diffuserve.engine.backends.compilation import compile_cache_dir, compile_pipeline

    started = time.perf_counter()
    compiled = compile_pipeline(pipeline, spec.compile, device, adapters=adapters)
    sizes = [tuple(int(side) for side in size.split("x")) for size in spec.compile_sizes] \
        or [(native_resolution, native_resolution)]
    drawn = sorted({drawn_at(width, height) for width, height in sizes})
    batch_sizes = list(range(1, max_images + 1))
    for width, height in drawn:
        for images in batch_sizes:
            probe(images, width, height)
    logger.info("model compiled", extra={"fields": {
        "model": spec.name, "mode": spec.compile, "compiled": compiled,
        "warmed": [f"{width}x{height}" for width, height in drawn],
        "batch_sizes": batch_sizes,
        "seconds": round(time.perf_counter() - started, 1),
        "cache": str(compile_cache_dir())}})


def use_onnx(pipeline: Any, spec: ModelSpec, device: str) -> str:
    """Denoise on ONNX Runtime (``runtime = "onnx"``), where the pipeline offers it and
    runs on the CPU; returns what runs the denoiser now: "onnx" or "torch"."""
    use = getattr(pipeline, "use_onnx_runtime", None)
    if use is None:
        raise ModelLoadFailed(
            f"Model {spec.name!r}: {type(pipeline).__name__} cannot run on ONNX "
            'Runtime (runtime = "onnx"); remove the setting to run it on PyTorch.')
    started = time.monotonic()
    try:
        runtime = "onnx" if use() else "torch"
    except Exception as exc:  # an accelerator that fails must not stop the model
        runtime = "torch"
        logger.warning("ONNX Runtime failed: the denoiser runs on PyTorch", exc_info=exc,
                       extra={"fields": {"model": spec.name,
                                         "error": f"{type(exc).__name__}: {exc}"}})
    logger.info("denoiser runtime", extra={"fields": {
        "model": spec.name, "runtime": runtime, "device": device,
        "seconds": round(time.monotonic() - started, 1)}})
    return runtime

"""Where a loaded pipeline's weights live: on its device, or with ``offload`` on the CPU
between their uses on a CUDA device (diffusers' offloading).

- ``model``: each component moves to the GPU whole when it runs, and back when the next
  one does (``enable_model_cpu_offload``): the largest component must fit; little slower.
- ``sequential``: every layer moves to the GPU as it runs (``enable_sequential_cpu_offload``):
  the least GPU memory, many times slower.
- ``group``: every layer moves to the GPU ahead of its use, on a side CUDA stream, while
  the one before it runs (``enable_group_offload``, leaf level, diffusers' documented
  setting): close to ``sequential``'s memory at a fraction of its cost.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from diffuserve.config import ModelSpec
from diffuserve.engine.errors import ModelLoadFailed

logger = logging.getLogger(__name__)


def place(pipeline: Any, spec: ModelSpec, device: str) -> Any:
    """``pipeline`` on ``device``, or offloaded there as ``spec.offload`` says; an
    offload on another device than CUDA is refused in one line."""
    if spec.offload is None:
        return pipeline.to(device)
    if device != "cuda":
        raise ModelLoadFailed(
            f"Model {spec.name!r}: offload = {spec.offload!r} keeps weights on the CPU "
            f"between their uses on a CUDA device, and the model runs on {device}; remove "
            "offload.")
    import torch

    started = time.perf_counter()
    if spec.offload == "model":
        pipeline.enable_model_cpu_offload(device=device)
    elif spec.offload == "sequential":
        pipeline.enable_sequential_cpu_offload(device=device)
    else:
        pipeline.enable_group_offload(
            onload_device=torch.device(device), offload_device=torch.device("cpu"),
            offload_type="leaf_level", use_stream=True)
    logger.info("model offloaded", extra={"fields": {
        "model": spec.name, "offload": spec.offload, "device": device,
        "seconds": round(time.perf_counter() - started, 1)}})
    return pipeline

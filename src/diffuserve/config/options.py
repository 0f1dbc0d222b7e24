"""A model's memory and speed options: quantised weights (``quantize``, or a GGUF file as
its denoiser: ``transformer``), CPU offload (``offload``) and step caching (``cache``).

```toml
[[models]]
name = "flux"
source = "black-forest-labs/FLUX.1-dev"
quantize = "int8"            # int8 | fp8 (torchao), nf4 (bitsandbytes), int4 (torchao, CUDA)
offload = "model"            # model | sequential | group (CUDA only)
cache = "first-block:0.12"   # first-block:<threshold> | taylorseer | faster
```

Their spellings, and which go together, as far as the models file alone tells; what
depends on the device or on the pipeline (a UNet has no step cache, nf4 needs CUDA on an
``auto`` device) is refused when the model loads, with one line that says why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Quantize = Literal["int8", "fp8", "nf4", "int4"]
Offload = Literal["model", "sequential", "group"]
CacheKind = Literal["first-block", "taylorseer", "faster"]

#: How ``cache`` is spelt, for messages and the reference.
CACHE_SPELLINGS = ("first-block:<threshold>", "taylorseer", "faster")

#: ``first-block:`` and a plain decimal number (no sign, exponent or spaces).
_FIRST_BLOCK = re.compile(r"first-block:([0-9]+(?:\.[0-9]+)?|\.[0-9]+)")

#: What runs only with CUDA: bitsandbytes' nf4 and torchao's int4 kernels.
CUDA_ONLY_QUANTIZE = {"nf4": "bitsandbytes' 4-bit layers",
                      "int4": "torchao's int4 weight-only kernels"}


@dataclass(frozen=True)
class StepCache:
    """A parsed ``cache`` setting: which of diffusers' step caches, and the first-block
    cache's threshold (the relative change of the first block's output below which the
    other blocks are skipped and their last residual reused)."""

    kind: CacheKind
    threshold: float | None = None


def parse_cache(value: str) -> StepCache:
    """``cache``'s value as a :class:`StepCache`; ``ValueError`` with the spellings it
    takes for anything else."""
    if value in ("taylorseer", "faster"):
        return StepCache(value)  # type: ignore[arg-type]
    matched = _FIRST_BLOCK.fullmatch(value)
    if matched is not None:
        threshold = float(matched.group(1))
        if not (0 < threshold <= 1 and math.isfinite(threshold)):
            raise ValueError(
                f"cache = {value!r}: the first-block threshold is a relative change, "
                "above 0 and at most 1 (0.05 to 0.2 are usual)")
        return StepCache("first-block", threshold)
    hint = (" (the first-block cache needs its threshold, e.g. \"first-block:0.1\")"
            if value.startswith("first-block") else "")
    raise ValueError(f"cache = {value!r} is not a step cache; use one of "
                     f"{', '.join(CACHE_SPELLINGS)}{hint}")


def option_conflicts(*, quantize: str | None, transformer: str | None, offload: str | None,
                     cache: str | None, device: str, dtype: str, compile: str, runtime: str,
                     workers: int) -> str | None:
    """Why these settings of one model cannot go together (the first reason found), or
    None. Only what the models file alone tells: the rest is checked at load."""
    named_device = device if device != "auto" else None
    if quantize is not None and transformer is not None:
        return ("quantize and transformer (a GGUF file, quantised already) are "
                "alternatives: choose one")
    if quantize in CUDA_ONLY_QUANTIZE and named_device in ("cpu", "mps"):
        return (f"quantize = {quantize!r} needs a CUDA device ({CUDA_ONLY_QUANTIZE[quantize]}), "
                f"and device = {device!r}: use \"int8\" or \"fp8\" there")
    if quantize == "int4" and dtype not in ("auto", "bfloat16"):
        return "quantize = \"int4\" computes in bfloat16: set dtype = \"bfloat16\" or \"auto\""
    if (quantize is not None or transformer is not None) and runtime == "onnx":
        return ("quantize and transformer change PyTorch's weights, and runtime = \"onnx\" "
                "runs an export of its own: choose one")
    if (quantize == "nf4" or transformer is not None) and compile != "off":
        what = "quantize = \"nf4\"" if quantize == "nf4" else "a GGUF transformer"
        return f"{what} and compile are not tested together: choose one"
    if offload is not None and named_device in ("cpu", "mps"):
        return (f"offload = {offload!r} keeps weights on the CPU between their uses on a CUDA "
                f"device, and device = {device!r}: remove offload")
    if offload is not None and compile != "off":
        return "offload and compile are not tested together: choose one"
    if cache is not None:
        if compile != "off":
            return ("cache and compile are alternatives (the cache decides in Python, step by "
                    "step, which blocks run): choose one")
        if runtime == "onnx":
            return "cache and runtime = \"onnx\" are alternatives: choose one"
        if workers > 1:
            return ("cache and workers above 1 cannot go together: the cache's state lives on "
                    "the denoiser that the workers share, so calls run one at a time")
    return None

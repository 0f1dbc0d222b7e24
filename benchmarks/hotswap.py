"""What adapters cost a compiled model (``compile = "default"``, inductor): a swap through
the hotswap slot against a swap that recompiles, and the steps of a model compiled for
adapters against one compiled without.

Builds the tiny random SD pipeline the tests use, writes two random LoRA files (rank 4,
every attention projection of the UNet) and loads the model three times in this
process, on the CPU or ``--device``:

1. uncompiled, with the adapters: what the compiled model must draw;
2. compiled with the adapters (the hotswap slot at ``--max-rank``, weights unfrozen,
   QKV projections apart): its load, then ``--rounds`` calls alternating between the
   two adapters and none (every call swaps; the median of the swap itself and of a
   call), with dynamo's graph count before and after; then a set of both adapters (it
   recompiles: its first call against its second);
3. compiled without adapters (weights frozen, fused QKV): the median of a call, against
   2's median call with no swap and 1's.

    python benchmarks/hotswap.py [--resolution 128] [--steps 4] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from diffuserve.config import ModelSpec  # noqa: E402
from diffuserve.engine.backends.diffusers import DiffusersBackend  # noqa: E402
from diffuserve.engine.types import GenerationParams  # noqa: E402
from tests.support.tiny_loras import write_tiny_loras  # noqa: E402
from tests.support.tiny_pipelines import build_tiny_sd  # noqa: E402

Lora = tuple[tuple[str, float], ...]


def params(side: int, steps: int, lora: Lora) -> GenerationParams:
    return GenerationParams(prompt="a cat", negative_prompt=None, width=side, height=side,
                            num_inference_steps=steps, guidance_scale=5.0, seeds=(1,),
                            lora=lora)


def timed(backend: DiffusersBackend, side: int, steps: int, lora: Lora) -> tuple[float, Any]:
    started = time.perf_counter()
    image = backend.generate(params(side, steps, lora))[0]
    return time.perf_counter() - started, np.asarray(image, np.int16)


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def load(name: str, spec: dict[str, Any]) -> tuple[DiffusersBackend, float]:
    started = time.perf_counter()
    backend = DiffusersBackend(ModelSpec(name=name, **spec))
    backend.load()
    return backend, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max-rank", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    side, steps = args.resolution, args.steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sd(Path(tmp) / "tiny-sd")
        write_tiny_loras(folder, Path(tmp) / "loras", ["pixel", "ink"])
        common = {"source": str(folder), "resolution": side, "max_batch_size": 1,
                  "device": args.device}
        with_adapters = {**common, "adapters_dir": str(Path(tmp) / "loras"),
                         "max_adapter_rank": args.max_rank}
        eager, _ = load("eager", with_adapters)
        compiled, load_seconds = load("compiled", {**with_adapters, "compile": "default"})
        assert compiled._adapters is not None
        adapters = compiled._adapters
        print(f"compiled with adapters: loaded in {load_seconds:.1f} s "
              f"(the slot shaped, compiled and warmed)")

        still = [timed(compiled, side, steps, ())[0] for _ in range(args.rounds)]
        cycle: list[Lora] = [(("pixel", 1.0),), (("ink", 0.8),), ()]
        before, swaps, calls, differences = graphs(), [], [], []
        for index in range(args.rounds):
            lora = cycle[index % len(cycle)]
            switched = adapters.switch_seconds
            seconds, image = timed(compiled, side, steps, lora)
            swaps.append(adapters.switch_seconds - switched)
            calls.append(seconds)
            differences.append(float(np.abs(image - timed(eager, side, steps, lora)[1]).mean()))
        print(f"hotswap: swap {1000 * statistics.median(swaps):.1f} ms (median), call "
              f"{statistics.median(calls):.3f} s with a swap vs {statistics.median(still):.3f}"
              f" s without; graphs compiled meanwhile: {graphs() - before}; largest mean "
              f"difference from uncompiled: {max(differences):.3f} of 255")

        both: Lora = (("ink", 1.0), ("pixel", 1.0))
        before = graphs()
        first, image = timed(compiled, side, steps, both)
        second, _ = timed(compiled, side, steps, both)
        difference = float(np.abs(image - timed(eager, side, steps, both)[1]).mean())
        print(f"a set of two adapters (no hotswap): first call {first:.1f} s (recompiles: "
              f"{graphs() - before} graph(s)), second {second:.3f} s; mean difference "
              f"from uncompiled: {difference:.3f} of 255")

        plain, plain_load = load("plain", {**common, "compile": "default"})
        frozen = statistics.median(timed(plain, side, steps, ())[0]
                                   for _ in range(args.rounds))
        uncompiled = statistics.median(timed(eager, side, steps, ())[0]
                                       for _ in range(args.rounds))
        print(f"a call without adapters: compiled with the slot {statistics.median(still):.3f}"
              f" s, compiled without adapters (frozen, fused QKV; loaded in "
              f"{plain_load:.1f} s) {frozen:.3f} s, uncompiled {uncompiled:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

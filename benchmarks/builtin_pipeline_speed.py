"""Two built-in pipeline folders timed call by call in one process, alternating.

A server benchmark on a shared 2-core machine drifts by more than a few percent between
runs; timing the two pipelines in one process, one call of each in turn, puts the same
drift on both. Each call draws a caption neither has drawn before (so the prompt cost is
paid as in a server that sees new prompts), seed i, with the built-in model's served
steps and guidance, at each ``--size``.

    python benchmarks/builtin_pipeline_speed.py --before OLD_WEIGHTS [--after DIR]
        [--calls 24] [--size 256 --size 1024]

The previous release's weights: ``git archive <commit> src/diffuserve/builtin/weights``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from builtin_speed import DEFAULT_DATA, load_prompts  # noqa: E402

from diffuserve import builtin  # noqa: E402


def load(folder: Path) -> Any:
    import torch

    from diffuserve.builtin.pipeline import EmojiPipeline

    pipe = EmojiPipeline.from_pretrained(str(folder), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a pipeline folder")
    parser.add_argument("--after", type=Path, default=builtin.WEIGHTS_DIR)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--calls", type=int, default=24, help="timed calls per folder and size")
    parser.add_argument("--size", type=int, action="append", help="default 256 and 1024")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    spec = builtin.builtin_spec()
    pipes = {"before": load(args.before), "after": load(args.after)}
    prompts = load_prompts(args.data)
    extra = [f"{prompt}, again {i}" for i in range(4) for prompt in prompts]
    fresh = iter(random.Random(0).sample(prompts + extra, len(prompts) + len(extra)))
    results: dict[str, dict[str, float]] = {}
    for size in args.size or [256, 1024]:
        times: dict[str, list[float]] = {name: [] for name in pipes}
        for call in range(args.calls + 1):  # the first call of each is a warm-up
            prompt = next(fresh)
            for name, pipe in pipes.items():
                started = time.perf_counter()
                pipe(prompt, height=size, width=size, num_inference_steps=spec.steps,
                     guidance_scale=spec.guidance_scale,
                     generator=torch.Generator().manual_seed(call))
                if call:
                    times[name].append(time.perf_counter() - started)
        results[str(size)] = {name: statistics.median(found) for name, found in times.items()}
        before, after = results[str(size)]["before"], results[str(size)]["after"]
        print(f"{size}²: median call before {before:.3f} s, after {after:.3f} s "
              f"({after / before:.3f} ×), {args.calls} calls each, alternating")
    if args.json:
        args.json.write_text(json.dumps({"before": str(args.before), "after": str(args.after),
                                         "calls": args.calls, "median_s": results}, indent=2))


if __name__ == "__main__":
    main()

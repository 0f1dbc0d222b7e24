"""``compile`` on and off through the server, and restarts with a cold and a warm cache.

Serves ``--pipeline`` (default: the built-in model, with its served settings; any other
folder with ModelSpec's defaults and ``--steps``) three times from a models file, each
time measuring how long ``diffuserve serve`` takes to answer ``/ready``, the latency of
the first request, and the median of ``--requests`` sequential ``b64_json`` requests
(openai SDK, ``--size``):

1. eager (``compile = "off"``; PyTorch, also for the built-in model, whose default
   runtime on a CPU is ONNX Runtime);
2. ``compile = MODE`` with an empty kernel cache (``TORCHINDUCTOR_CACHE_DIR`` a fresh
   folder): start-up compiles and warms up;
3. the same again, a restart that finds the cache from run 2.

    python benchmarks/compile_speed.py [--mode default] [--requests 10] [--size 256x256]
    python benchmarks/compile_speed.py --pipeline DIR --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, get_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.builtin_speed import DEFAULT_DATA, load_prompts, models_file, time_requests  # noqa: E402  # noqa: E402
from diffuserve import builtin  # noqa: E402
from diffuserve.config import CompileMode  # noqa: E402
from tests.support.live_server import start_server  # noqa: E402


def serve_and_time(folder: Path, models: Path, cache: Path, size: str, prompts: list[str],
                   requests: int) -> dict[str, Any]:
    started = time.perf_counter()
    server = start_server(["--models-file", str(models)], folder,
                          env={"TORCHINDUCTOR_CACHE_DIR": str(cache)}, timeout=1800)
    ready_s = time.perf_counter() - started
    try:
        (first_s,) = time_requests(server, size, prompts, 1, 0)
        times = time_requests(server, size, prompts, requests, 1)
        compiled = [line for line in server.log().splitlines() if "model compiled" in line]
    finally:
        server.stop()
    return {"ready_s": ready_s, "first_s": first_s, "median_s": statistics.median(times),
            "times_s": times,
            "compile_log": json.loads(compiled[0]) if compiled else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=builtin.WEIGHTS_DIR)
    parser.add_argument("--mode", default="default",
                        choices=[mode for mode in get_args(CompileMode) if mode != "off"])
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, help="default: the model's (the built-in: 8)")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    prompts = load_prompts(args.data)

    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain = args.pipeline.resolve() != builtin.WEIGHTS_DIR.resolve()
        # PyTorch on both sides: the built-in model's default runtime on a CPU is ONNX
        # Runtime, which compile is an alternative to.
        settings: dict[str, Any] = {"runtime": "torch"}
        if args.steps:
            settings["steps"] = args.steps
        eager = models_file(args.pipeline, root / "eager", plain=plain, **settings)
        compiled = models_file(args.pipeline, root / "compiled", plain=plain,
                               compile=args.mode, **settings)
        cache = root / "kernels"
        for name, models in (("eager", eager), ("compiled, cold cache", compiled),
                             ("compiled, warm cache", compiled)):
            runs[name] = serve_and_time(models.parent, models, cache, args.size, prompts,
                                        args.requests)
            print(f"{name:<22} ready {runs[name]['ready_s']:7.1f} s  first request "
                  f"{runs[name]['first_s']:6.3f} s  median {runs[name]['median_s']:6.3f} s",
                  flush=True)
    eager_run, cold, warm = runs.values()
    print(f"pipeline: {args.pipeline}  mode: {args.mode}  size: {args.size}  "
          f"requests: {args.requests}")
    print(f"compiled / eager median: {cold['median_s'] / eager_run['median_s']:.2f} (cold run),"
          f" {warm['median_s'] / eager_run['median_s']:.2f} (warm run)")
    print(f"start-up with a warm cache / cold: {warm['ready_s'] / cold['ready_s']:.2f} "
          f"({warm['ready_s']:.1f} s vs {cold['ready_s']:.1f} s; "
          f"eager {eager_run['ready_s']:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"pipeline": str(args.pipeline), "mode": args.mode,
                                         "size": args.size, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()

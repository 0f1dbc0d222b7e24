"""What the server adds to a pipeline: one request at a time, and under concurrency.

By default the pipeline is ``benchmarks/step_cost.py``'s: 25 steps that each hold the GIL
for 5 ms and then wait 21 ms (+2.5 ms per extra image in the batch) with it released —
the host side of a GPU pipeline of about 0.65 s per 512² image, the H100 SD 1.5 figure.
``--model DIR`` measures any local diffusers pipeline instead (the built-in model…),
``--tiny`` the tests' tiny random SD. Both sides load the pipeline the same way
(``DiffusersBackend``).

1. **Sequential**: ``--requests`` ``b64_json`` generations through ``diffuserve serve`` with
   the official openai SDK, each followed by the same pipeline called directly in this
   process (interleaved, so both see the same machine). Overhead = server median /
   direct median − 1. Target ≤ 2 %.
2. **Concurrent**: ``--clients`` threads send ``--concurrent-requests`` requests in all to a
   server whose model batches up to ``--batch`` images; the sustained images per second
   (each batch's images over the time since the batch before) against the pipeline
   called directly with batches of ``--batch``. Target ≥ 95 %.

    python benchmarks/server_overhead.py [--requests 20] [--clients 16] [--batch 4]
    python benchmarks/server_overhead.py --model src/diffuserve/builtin/weights --size 256x256 \\
        --steps 8 --batch 8
    python benchmarks/server_overhead.py --tiny --size 256x256 --steps 4 [--workers 2]
    python benchmarks/server_overhead.py --model /tmp/sd15 --size 512x512 --steps 25 \\
        --batch 8 --compile reduce-overhead     # on a GPU: compiled on both sides
    python benchmarks/server_overhead.py --model /tmp/sd15 --size 512x512 --steps 25 \\
        --batch auto --clients 64 --concurrent-requests 256   # batches the card holds

``--compile MODE`` compiles the pipeline on both sides, as a model's ``compile`` setting
does (the server at start-up, this process before its first direct call), with one
kernel cache for both, so the second compilation reads what the first wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, get_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks import step_cost  # noqa: E402
from diffuserve.config import CompileMode  # noqa: E402
from tests.support.live_server import LiveServer, start_server  # noqa: E402
from tests.support.load import server_log_entries  # noqa: E402

LAUNCHER = [sys.executable, str(Path(step_cost.__file__).resolve())]


def served_batch(server: LiveServer) -> int | None:
    """The batch size the server measured for ``max_batch_size = "auto"``, from its log."""
    for record in server_log_entries(server):
        if record.get("message") == "batch size measured":
            return int(record["max_batch_images"])
    return None


def batch_setting(value: str) -> int | str:
    """``--batch``: a number of images, or ``auto``."""
    return value if value == "auto" else int(value)


def direct_call(pipeline: Any, size: tuple[int, int], steps: int, seeds: list[int]) -> float:
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        pipeline(prompt=["a red apple"] * len(seeds), width=size[0], height=size[1],
                 num_inference_steps=steps,
                 generator=[torch.Generator().manual_seed(s) for s in seeds])
    return time.perf_counter() - started


def sequential(server: LiveServer, pipeline: Any, args: argparse.Namespace,
               size: tuple[int, int]) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0,
                           timeout=600)
    served: list[float] = []
    direct: list[float] = []
    first: list[float] = []
    for i in range(args.requests + 2):
        started = time.perf_counter()
        client.images.generate(model="bench", prompt="a red apple", size=args.size,
                               response_format="b64_json",
                               extra_body={"seed": i, "num_inference_steps": args.steps})
        served_s = time.perf_counter() - started
        direct_s = direct_call(pipeline, size, args.steps, [i])
        if i >= 2:  # the first calls warm up
            served.append(served_s)
            direct.append(direct_s)
        else:
            first.append(served_s)
    served_median, direct_median = statistics.median(served), statistics.median(direct)
    # The first request after start (with --compile: no compilation in front of it).
    return {"served_median_s": served_median, "direct_median_s": direct_median,
            "overhead": served_median / direct_median - 1, "served_s": served,
            "direct_s": direct, "first_served_s": first[0]}


def concurrent(server: LiveServer, pipeline: Any, args: argparse.Namespace,
               size: tuple[int, int]) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0,
                           timeout=600)
    total = args.concurrent_requests
    taken = iter(range(total))
    lock = threading.Lock()
    finished: list[float] = []
    failures: list[str] = []

    def one(seed: int) -> None:
        client.images.generate(model="bench", prompt="a red apple", size=args.size,
                               response_format="b64_json",
                               extra_body={"seed": seed, "num_inference_steps": args.steps})

    def work() -> None:
        while True:
            with lock:
                seed = next(taken, None)
            if seed is None:
                return
            try:
                one(seed)
                with lock:
                    finished.append(time.perf_counter())
            except Exception as exc:  # counted, and the run reported as failed
                failures.append(f"{type(exc).__name__}: {exc}")

    one(10_000)  # warm
    threads = [threading.Thread(target=work) for _ in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    wall = (max(finished) if finished else time.perf_counter()) - started
    calls = [direct_call(pipeline, size, args.steps, list(range(k, k + args.batch)))
             for k in range(0, 4 * args.batch, args.batch)]
    call_s = statistics.median(calls[1:])
    direct_rate = args.batch / call_s
    report: dict[str, Any] = {}
    if args.workers > 1:
        # Batches side by side: their answers interleave, so the sustained rate is the
        # images answered between the 10th and the 90th percentile of the run.
        moments = sorted(finished)
        low, high = moments[len(moments) // 10], moments[(9 * len(moments)) // 10]
        inside = sum(1 for moment in moments if low < moment <= high)
        side_by_side = direct_side_by_side(pipeline, size, args, rounds=3)
        report = {"served_images_per_s": inside / (high - low),
                  "direct_side_by_side_images_per_s": side_by_side,
                  "ratio_side_by_side": inside / (high - low) / side_by_side}
    # Sustained rate: the images of each batch over the time since the batch before it
    # (answers of one batch arrive together; batches a call's time apart). Over the
    # whole run, the first batch (whoever had arrived: often one request) and the last
    # (what was left) are smaller, which says nothing of the server.
    batches: list[list[float]] = []
    for moment in sorted(finished):
        if batches and moment - batches[-1][-1] < call_s / 4:
            batches[-1].append(moment)
        else:
            batches.append([moment])
    rates = [len(batch) / (batch[0] - before[0])
             for before, batch in zip(batches, batches[1:], strict=False)]
    sustained = report.get("served_images_per_s",
                           statistics.median(rates) if rates else float("nan"))
    return {"images": len(finished), "failures": failures, "wall_s": wall,
            "served_images_per_s": sustained, "whole_run_images_per_s": len(finished) / wall,
            "batches": [len(batch) for batch in batches], "direct_images_per_s": direct_rate,
            "ratio": sustained / direct_rate, "direct_call_s": calls, **report}


def direct_side_by_side(pipeline: Any, size: tuple[int, int], args: argparse.Namespace,
                        rounds: int) -> float:
    """Images/s of ``args.workers`` threads each calling its own copy of the pipeline
    (sharing the weights) with batches of ``args.batch`` on its share of the cores: what
    the server's workers do, without the server."""
    import copy

    import torch

    everything = torch.get_num_threads()
    share = max(1, everything // args.workers)
    scheduler = pipeline.scheduler

    def work(twin: Any) -> None:
        torch.set_num_threads(share)
        try:
            for k in range(rounds):
                twin.scheduler = copy.deepcopy(scheduler)
                direct_call(twin, size, args.steps,
                            list(range(k * args.batch, (k + 1) * args.batch)))
        finally:
            torch.set_num_threads(everything)

    twins = [copy.copy(pipeline) for _ in range(args.workers)]
    for twin in twins:  # warm each thread count
        thread = threading.Thread(target=work, args=(twin,))
        thread.start()
        thread.join()
    threads = [threading.Thread(target=work, args=(twin,)) for twin in twins]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return args.workers * rounds * args.batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, help="a local diffusers pipeline folder")
    which.add_argument("--tiny", action="store_true",
                       help="the tests' tiny random SD pipeline (built here)")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--requests", type=int, default=20, help="sequential requests")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--concurrent-requests", type=int, default=64)
    parser.add_argument("--batch", type=batch_setting, default=4,
                        help="the model's max_batch_size: a number, or auto (measured at "
                             "load on both sides; the direct calls use the server's)")
    parser.add_argument("--compile", default="off", choices=get_args(CompileMode),
                        help="torch.compile the pipeline on both sides (a model's compile)")
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnx"),
                        help="the model's runtime on both sides (onnx: the built-in model)")
    parser.add_argument("--workers", type=int, default=1,
                        help="the model's workers: calls side by side on the CPU; also "
                             "compared with as many direct callers side by side")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from diffuserve.config import ModelSpec
    from diffuserve.engine.backends.diffusers import DiffusersBackend

    step_cost.register()
    size = tuple(int(part) for part in args.size.split("x"))
    assert len(size) == 2
    report: dict[str, Any] = {"size": args.size, "steps": args.steps,
                              "batch_setting": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from tests.support.tiny_pipelines import build_tiny_sd

            folder = build_tiny_sd(Path(tmp) / "tiny-sd")
            report["model"] = "tiny random SD (tests/support/tiny_pipelines.py)"
        else:
            folder = args.model or step_cost.write(Path(tmp) / "step-cost")
            report["model"] = str(args.model or "step-cost pipeline (benchmarks/step_cost.py)")
        # One kernel cache for both sides (the server's compilation reads this one's).
        kernels = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tmp) / "kernels"))
        report["compile"] = args.compile
        started = time.perf_counter()
        backend = DiffusersBackend(ModelSpec(name="bench", source=str(folder),
                                             max_batch_size=args.batch, compile=args.compile,
                                             runtime=args.runtime))
        backend.load()
        report["direct_load_s"] = time.perf_counter() - started
        import torch

        if torch.cuda.is_available():
            # Only the weights stay held here: the server measures "auto" on this card too.
            torch.cuda.empty_cache()
        models = Path(tmp) / "models.toml"
        setting = '"auto"' if args.batch == "auto" else args.batch
        models.write_text(f'[[models]]\nname = "bench"\nsource = "{folder}"\n'
                          f'max_batch_size = {setting}\ncompile = "{args.compile}"\n'
                          f'runtime = "{args.runtime}"\nworkers = {args.workers}\n')
        args.batch = report["batch"] = backend.max_batch_images or 1
        started = time.perf_counter()
        server = start_server(["--models-file", str(models), "--max-queue", "256"], Path(tmp),
                              command=LAUNCHER, env={"TORCHINDUCTOR_CACHE_DIR": kernels},
                              timeout=1800)
        report["server_ready_s"] = time.perf_counter() - started
        if report["batch_setting"] == "auto":
            # The server measured its own (on a GPU, with this process's weights on the
            # card too, so a little smaller than alone): the direct calls use it.
            report["direct_measured_batch"] = args.batch
            args.batch = report["batch"] = served_batch(server) or args.batch
        try:
            # Called directly where the server has it draw (then resizes to the request).
            drawn = backend._draw_size_of(*size)
            report["sequential"] = sequential(server, backend.pipeline, args, drawn)
            report["concurrent"] = concurrent(server, backend.pipeline, args, drawn)
        finally:
            server.stop()

    seq, con = report["sequential"], report["concurrent"]
    print(f"model: {report['model']}  size: {args.size}  steps: {args.steps}  compile: "
          f"{args.compile} (loaded in {report['direct_load_s']:.1f} s here, the server ready "
          f"in {report['server_ready_s']:.1f} s)")
    print(f"sequential ({args.requests} requests): direct {seq['direct_median_s'] * 1000:.1f} ms"
          f", through the server {seq['served_median_s'] * 1000:.1f} ms: overhead "
          f"{seq['overhead']:+.1%}  (target ≤ 2 %); the first request after start "
          f"{seq['first_served_s'] * 1000:.1f} ms")
    measured = " (auto)" if report["batch_setting"] == "auto" else ""
    print(f"concurrent ({args.clients} clients, {con['images']} images, batches of "
          f"{args.batch}{measured}): {con['served_images_per_s']:.2f} images/s sustained "
          f"({con['whole_run_images_per_s']:.2f} over the whole run, batches "
          f"{con['batches']}); direct at batch {args.batch}: "
          f"{con['direct_images_per_s']:.2f} images/s: {con['ratio']:.1%} (target ≥ 95 %)"
          + (f"  FAILURES: {len(con['failures'])}" if con["failures"] else ""))
    if args.workers > 1:
        print(f"workers: {args.workers} calls side by side; {args.workers} direct callers "
              f"side by side: {con['direct_side_by_side_images_per_s']:.2f} images/s, the "
              f"server {con['ratio_side_by_side']:.1%} of it")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

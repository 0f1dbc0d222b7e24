"""What LoRA adapters cost a live server: a swap between adapter sets, and a burst of
requests mixing adapter sets against the same burst with one set.

Builds the tiny random SD pipeline the tests use (served at ``--resolution``, so that an
image costs some compute), writes ``--adapters`` random LoRA files (rank 4, every
attention projection of the UNet) into its adapters folder, starts ``diffuserve serve``
and, with the openai SDK (``extra_body={"lora": …}``):

1. **swap**: ``--rounds`` sequential requests (n=1) with the same adapter every time,
   then as many alternating between two adapters (every request switches the set in
   the weights; both stay loaded), then as many cycling through more adapters than
   ``max_loaded_adapters`` keeps (every request loads one from disk and unloads
   another). Median latencies, and the differences to the first: what a switch and a
   load cost.
2. **mixed burst**: ``--clients`` concurrent requests, all with one adapter, then the
   same burst split over 2 and over 4 adapter sets (requests batch only with their own
   set). Wall time of each burst (median of ``--bursts``) and the ratio to the first.

    python benchmarks/adapters.py [--resolution 256] [--rounds 12] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import openai  # noqa: E402

from tests.support.live_server import start_server  # noqa: E402
from tests.support.tiny_loras import write_tiny_loras  # noqa: E402
from tests.support.tiny_pipelines import build_tiny_sd  # noqa: E402


def request(client: openai.OpenAI, lora: Any, steps: int) -> float:
    extra: dict[str, Any] = {"num_inference_steps": steps, "seed": 1}
    if lora is not None:
        extra["lora"] = lora
    started = time.perf_counter()
    client.images.generate(model="bench", prompt="a cat", response_format="b64_json",
                           size="256x256", extra_body=extra)
    return time.perf_counter() - started


def sequence(client: openai.OpenAI, names: list[str], rounds: int, steps: int) -> float:
    """The median latency of ``rounds`` requests cycling through ``names``."""
    request(client, {"name": names[0]}, steps)  # warm: loaded, active
    return statistics.median(request(client, {"name": names[index % len(names)]}, steps)
                             for index in range(rounds))


def burst(client: openai.OpenAI, sets: int, clients: int, steps: int) -> float:
    """Seconds for ``clients`` requests sent at once over ``sets`` adapter sets."""
    start = threading.Barrier(clients + 1)
    done: list[float] = []

    def send(index: int) -> None:
        start.wait()
        request(client, {"name": f"a{index % sets}"}, steps)
        done.append(time.perf_counter())

    threads = [threading.Thread(target=send, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return max(done) - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--adapters", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_sd(root / "tiny-sd")
        names = [f"a{index}" for index in range(args.adapters)]
        write_tiny_loras(model, root / "loras", names)
        (root / "models.toml").write_text(
            f'[[models]]\nname = "bench"\nsource = "{model}"\n'
            f"resolution = {args.resolution}\nmax_batch_size = {args.clients}\n"
            f'adapters_dir = "loras"\nmax_loaded_adapters = 8\n')
        server = start_server(["--models-file", str(root / "models.toml"),
                               "--max-queue", "256"], root, timeout=180)
        try:
            with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused",
                               max_retries=0, timeout=600) as client:
                print(f"tiny SD at {args.resolution}px, {args.steps} steps, "
                      f"{args.adapters} rank-4 adapters, max_loaded_adapters 8")
                plain = sequence(client, [names[0]], args.rounds, args.steps)
                switch = sequence(client, names[:2], args.rounds, args.steps)
                load = sequence(client, names[:9], args.rounds, args.steps)
                print("1. sequential requests, median latency:")
                print(f"   same adapter        {plain * 1000:7.1f} ms")
                print(f"   alternating two     {switch * 1000:7.1f} ms  "
                      f"(a switch: {(switch - plain) * 1000:+.1f} ms)")
                print(f"   cycling nine of 8   {load * 1000:7.1f} ms  "
                      f"(a load from disk and an unload: {(load - plain) * 1000:+.1f} ms)")
                print(f"2. bursts of {args.clients} concurrent requests, median wall time:")
                base = None
                for sets in (1, 2, 4):
                    burst(client, sets, args.clients, args.steps)  # warm
                    wall = statistics.median(burst(client, sets, args.clients, args.steps)
                                             for _ in range(args.bursts))
                    base = base or wall
                    print(f"   {sets} adapter set(s)   {wall:6.2f} s  ({wall / base:.2f}x)")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What LoRA adapters cost: a swap between adapter sets, and a burst of requests mixing
adapter sets against the same burst with one set.

Builds the tiny random SD pipeline the tests use and writes ``--adapters`` random LoRA
files (rank 4, every attention projection of the UNet), then:

1. **swap** (in process, on the engine's own adapter cache, ``LoadedAdapters``): the
   median time to make another loaded set active (``set_adapters``), to load an adapter
   from disk while unloading the least recently used one (a cache of 8 cycled through 9
   adapters), and, for scale, one pipeline call at ``--resolution`` and ``--steps``;
2. **mixed burst** (a live ``diffuserve serve`` and the openai SDK,
   ``extra_body={"lora": …}``): ``--clients`` concurrent requests, all with one adapter,
   then the same burst split over 2 and over 4 adapter sets (requests batch only with
   their own set). Wall time of each burst (median of ``--bursts``) and the ratio to the
   first.

    python benchmarks/adapters.py [--resolution 128] [--steps 2] [--rounds 20] [--clients 8]
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


def swaps(model: Path, folder: Path, names: list[str], rounds: int, resolution: int,
          steps: int) -> dict[str, float]:
    """Median seconds of a switch between loaded sets, of a load with an unload, and of
    one pipeline call, on the engine's adapter cache over the tiny pipeline."""
    from types import SimpleNamespace

    import torch
    from diffusers import StableDiffusionPipeline

    from diffuserve.engine.adapters import AdapterLibrary
    from diffuserve.engine.backends.diffusers.adapters import LoadedAdapters

    pipeline = StableDiffusionPipeline.from_pretrained(str(model))
    pipeline.set_progress_bar_config(disable=True)
    spec = SimpleNamespace(name="bench", adapters=(), adapters_dir=folder)
    loaded = LoadedAdapters(pipeline, AdapterLibrary(spec), capacity=8)  # type: ignore[arg-type]

    def timed(name: str) -> float:
        started = time.perf_counter()
        with loaded.using(((name, 1.0),)):
            pass
        return time.perf_counter() - started

    for name in names[:2]:
        timed(name)  # loaded
    switch = statistics.median(timed(names[index % 2]) for index in range(rounds))
    for name in names[:8]:
        timed(name)
    # Nine adapters through a cache of eight: every one is a load and an unload.
    load = statistics.median(timed(names[index % 9]) for index in range(8, 8 + rounds))

    def call() -> float:
        started = time.perf_counter()
        with loaded.using(((names[0], 1.0),)):
            pipeline("a cat", num_inference_steps=steps, height=resolution, width=resolution,
                     generator=torch.Generator().manual_seed(1))
        return time.perf_counter() - started

    call()
    drawing = statistics.median(call() for _ in range(3))
    return {"switch": switch, "load": load, "call": drawing}


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
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
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
        cost = swaps(model, root / "loras", names, args.rounds, args.resolution, args.steps)
        server = start_server(["--models-file", str(root / "models.toml"),
                               "--max-queue", "256"], root, timeout=180)
        try:
            with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused",
                               max_retries=0, timeout=600) as client:
                print(f"tiny SD at {args.resolution}px, {args.steps} steps, "
                      f"{args.adapters} rank-4 adapters, max_loaded_adapters 8")
                print(f"1. in process, median of {args.rounds}:")
                print(f"   switch to another loaded set   {cost['switch'] * 1000:7.1f} ms")
                print(f"   load from disk (and unload)    {cost['load'] * 1000:7.1f} ms")
                print(f"   one pipeline call, for scale   {cost['call'] * 1000:7.1f} ms")
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

"""Ray Serve against the in-process server: overhead per request, and 1 vs 2 replicas.

Starts, one after another, on the built-in model:

1. ``diffuserve serve`` (in process);
2. ``diffuserve serve --ray`` on a local Ray cluster (``ray start --head --num-cpus 2``
   on the loopback interface, a new one for each run) with one replica of 1 CPU, then
   two (Ray gives a replica's torch as many threads as it has CPUs);

and measures on each the median latency of sequential requests (one client), of
sequential one-step requests (what is left is mostly the request's path), and the
throughput of ``--clients`` concurrent clients. Ratios come from this one run:

- Ray's path per request: the one-step median on Ray minus in process;
- scaling: throughput with 2 replicas over 1 (1 CPU each).

    python benchmarks/ray_scaling.py [--sequential 10] [--clients 8] [--requests 4]

Needs ``pip install -e ".[test]"`` (Ray Serve, the test helpers).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import openai  # noqa: E402

from tests.support.live_server import LiveServer, start_server  # noqa: E402
from tests.support.ray_cluster import RAY_ENV, ray_head  # noqa: E402


def request(client: openai.OpenAI, prompt: str, size: str, steps: int | None = None) -> float:
    started = time.perf_counter()
    extra = {"num_inference_steps": steps} if steps else None
    result = client.images.generate(model="dall-e-2", prompt=prompt, size=size,  # type: ignore[arg-type]
                                    response_format="b64_json", extra_body=extra)
    assert base64.b64decode(result.data[0].b64_json or "")
    return time.perf_counter() - started


def measure(server: LiveServer, *, sequential: int, clients: int, requests: int,
            size: str) -> dict[str, Any]:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0,
                           timeout=300)
    for warm in range(2):
        request(client, f"warm-up {warm}", size)
    latencies = [request(client, f"a rocket {i}", size) for i in range(sequential)]
    # One denoising step: what is left is mostly the path a request takes.
    minimal = [request(client, f"a kite {i}", size, steps=1) for i in range(sequential)]

    def one_client(number: int) -> int:
        own = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0,
                            timeout=300)
        for i in range(requests):
            request(own, f"a cat {number}-{i}", size)
        return requests

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        images = sum(pool.map(one_client, range(clients)))
    elapsed = time.perf_counter() - started
    return {"median_s": statistics.median(latencies),
            "minimal_s": statistics.median(minimal), "images": images,
            "throughput": images / elapsed}


#: The Ray runs: (label, replicas, CPUs per replica; Ray gives a replica's torch as many
#: threads as CPUs).
RAY_RUNS = (("ray, 1 replica x 1 CPU", 1, 1), ("ray, 2 replicas x 1 CPU", 2, 1))


def builtin_models(num_cpus: int) -> str:
    """The built-in model as DIFFUSERVE_MODELS JSON, with its Ray CPUs."""
    from diffuserve import builtin

    spec = builtin.builtin_spec().model_dump(mode="json")
    spec["ray"] = {"num_cpus": num_cpus}
    return json.dumps([spec])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--size", default="256x256")
    args = parser.parse_args(argv)
    shape = {"sequential": args.sequential, "clients": args.clients,
             "requests": args.requests, "size": args.size}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "local").mkdir()
        server = start_server([], tmp / "local")
        try:
            results["in process"] = measure(server, **shape)
        finally:
            server.stop()
        for label, replicas, cpus in RAY_RUNS:
            work = tmp / f"ray-{replicas}-{cpus}"
            work.mkdir()
            # A cluster each: Serve keeps the HTTP port it first started with.
            with ray_head(work) as address:
                server = start_server(
                    ["--ray", "--replicas", str(replicas)], work,
                    env={**RAY_ENV, "RAY_ADDRESS": address,
                         "DIFFUSERVE_MODELS": builtin_models(cpus)}, timeout=300)
                try:
                    results[label] = measure(server, **shape)
                finally:
                    server.stop()
    print(f"\nbuilt-in model, {args.size}, {os.cpu_count()} cores; sequential: "
          f"{args.sequential} requests; concurrent: {args.clients} clients x "
          f"{args.requests}")
    print(f"{'':24} {'median latency':>15} {'1 step':>10} {'throughput':>14}")
    for label, result in results.items():
        print(f"{label:24} {result['median_s'] * 1000:12.0f} ms "
              f"{result['minimal_s'] * 1000:7.0f} ms {result['throughput']:9.2f} img/s")
    local, one, two = (results[key] for key in results)
    print(f"Ray's path per request (1-step requests, Ray vs in process): "
          f"{(one['minimal_s'] - local['minimal_s']) * 1000:+.0f} ms")
    print(f"throughput, 2 replicas / 1 replica (1 CPU each): "
          f"{two['throughput'] / one['throughput']:.2f}x; "
          f"2 replicas / in process: {two['throughput'] / local['throughput']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

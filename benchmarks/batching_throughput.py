"""Throughput with cross-request batching on vs off (``--no-batching``), as a ratio.

Builds the tiny random SD pipeline the tests use (or takes ``--model``) and, for each
configuration, starts ``diffuserve serve`` twice one after the other (batching on, then
off) and lets ``--clients`` concurrent openai SDK clients send ``--requests`` identical
requests each (n=1, b64_json, same size and steps, a queue large enough that nothing is
refused). Prints images/s and client latency p50/p90 of both servers, and their ratios.

Two configurations:

* ``native``: the model at its own resolution (the tiny model draws 64 px), where the
  fixed cost of a pipeline call dominates and batching should pay off most;
* ``resolution=N`` (``--resolution``, default 128; 0 skips it): the same model served
  through a models TOML file with ``resolution = N``, so each image costs more compute
  and batching's gain on a CPU shrinks.

    python benchmarks/batching_throughput.py [--clients 16] [--requests 4] [--steps 4]
    python benchmarks/batching_throughput.py --model ./my-pipeline --size 512x512
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import openai  # noqa: E402
from PIL import Image  # noqa: E402

from tests.support.live_server import start_server  # noqa: E402
from tests.support.load import percentile, scrape_metrics, sum_samples  # noqa: E402
from tests.support.tiny_pipelines import build_tiny_sd  # noqa: E402

MODEL_NAME = "bench"


@dataclass
class Run:
    """One server's measurement."""

    label: str
    images: int
    wall: float
    latencies: list[float]
    errors: list[str]
    batches: int
    mean_batch: float | None

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall if self.wall else 0.0

    def latency_ms(self, q: float) -> float:
        value = percentile(self.latencies, q)
        return value * 1000 if value is not None else float("nan")


def _client(number: int, base_url: str, requests: int, size: str, steps: int,
            start: threading.Barrier, latencies: list[float], errors: list[str]) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-bench", max_retries=0,
                           timeout=300)
    width, height = (int(part) for part in size.split("x"))
    try:
        start.wait()
        for index in range(requests):
            began = time.perf_counter()
            try:
                response = client.images.generate(
                    model=MODEL_NAME, prompt=f"a lighthouse at dusk, {number}-{index}",
                    size=size,  # type: ignore[arg-type]
                    response_format="b64_json",
                    extra_body={"num_inference_steps": steps, "seed": number * 100 + index},
                )
            except openai.OpenAIError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - began)
            data = base64.b64decode(response.data[0].b64_json or "")
            with Image.open(io.BytesIO(data)) as image:
                if image.size != (width, height):
                    errors.append(f"image is {image.size}, asked {size}")
    finally:
        client.close()


def measure(label: str, model_args: Sequence[str], batching: bool, tmp: Path, *,
            clients: int, requests: int, size: str, steps: int) -> Run:
    """Start a server, warm it up, then time ``clients`` x ``requests`` concurrent requests."""
    args = [*model_args, "--max-queue", str(clients * requests + 16)]
    if not batching:
        args.append("--no-batching")
    server = start_server(args, tmp)
    try:
        warm = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-bench",
                             max_retries=0, timeout=300)
        for seed in range(2):  # the first pipeline calls are slower
            warm.images.generate(model=MODEL_NAME, prompt="warm up", size=size,  # type: ignore[arg-type]
                                 response_format="b64_json",
                                 extra_body={"num_inference_steps": steps, "seed": seed})
        warm.close()
        before = scrape_metrics(server.base_url)
        latencies: list[float] = []
        errors: list[str] = []
        start = threading.Barrier(clients + 1)
        threads = [threading.Thread(target=_client, daemon=True,
                                    args=(number, server.base_url, requests, size, steps,
                                          start, latencies, errors))
                   for number in range(clients)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join(timeout=600)
        wall = time.perf_counter() - began
        after = scrape_metrics(server.base_url)
    finally:
        server.stop()
    batches = int(sum_samples(after, "diffuserve_batch_images_count")
                  - sum_samples(before, "diffuserve_batch_images_count"))
    batch_images = (sum_samples(after, "diffuserve_batch_images_sum")
                    - sum_samples(before, "diffuserve_batch_images_sum"))
    return Run(label, len(latencies), wall, latencies, errors, batches,
               batch_images / batches if batches else None)


def report(title: str, on: Run, off: Run) -> str:
    lines = [title]
    for run in (on, off):
        lines.append(
            f"  {run.label:<13} {run.images_per_second:6.2f} images/s   "
            f"p50 {run.latency_ms(50):7.0f} ms   p90 {run.latency_ms(90):7.0f} ms   "
            f"{run.batches} pipeline calls, mean {run.mean_batch or 0:.2f} images/call   "
            f"({run.images} images in {run.wall:.1f} s)"
            + (f"   ERRORS {len(run.errors)}: {run.errors[:2]}" if run.errors else ""))
    lines.append(
        f"  on/off:       throughput x{on.images_per_second / off.images_per_second:.2f}   "
        f"p50 x{on.latency_ms(50) / off.latency_ms(50):.2f}   "
        f"p90 x{on.latency_ms(90) / off.latency_ms(90):.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=128,
                        help="native resolution of the compute-bound configuration (0: skip)")
    parser.add_argument("--model", type=Path, help="a local diffusers pipeline folder")
    args = parser.parse_args(argv)

    failed = False
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = (args.model or build_tiny_sd(tmp / "tiny-sd")).resolve()
        configurations: list[tuple[str, list[str]]] = [
            ("native resolution", ["--model", f"{MODEL_NAME}={model}"])]
        if args.resolution:
            models_file = tmp / "models.toml"
            models_file.write_text(
                f'[[models]]\nname = "{MODEL_NAME}"\nsource = "{model}"\n'
                f"resolution = {args.resolution}\n")
            configurations.append((f"resolution = {args.resolution}",
                                   ["--models-file", str(models_file)]))
        print(f"model: {args.model or 'tiny random SD (64 px native)'}  size: {args.size}  "
              f"steps: {args.steps}  clients: {args.clients} x {args.requests} requests (n=1)")
        for title, model_args in configurations:
            runs = [measure(label, model_args, batching, tmp, clients=args.clients,
                            requests=args.requests, size=args.size, steps=args.steps)
                    for label, batching in (("batching on", True), ("batching off", False))]
            print(report(title, *runs), flush=True)
            failed = failed or any(run.errors for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

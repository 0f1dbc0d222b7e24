"""Latency through the HTTP API vs calling the backend in-process, same images.

Builds the tiny random SD pipeline the tests use (so it runs offline), starts
``diffuserve serve`` on a loopback port, and times ``--requests`` sequential
``b64_json`` generations with the official openai SDK, each followed by the same work
done in-process (backend.generate + PNG + base64): interleaved, so that both see the
same load on a shared machine. Prints medians and the ratio.

    python benchmarks/server_overhead.py [--requests 30] [--size 256x256] [--steps 4]
    python benchmarks/server_overhead.py --model ./my-pipeline   # any local pipeline
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.conftest import start_server  # noqa: E402
from tests.tiny_pipelines import build_tiny_sd  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model", type=Path, help="a local diffusers pipeline folder")
    args = parser.parse_args()

    import openai

    from diffuserve.config import ModelSpec
    from diffuserve.engine.backends.diffusers import DiffusersBackend
    from diffuserve.engine.types import GenerationParams
    from diffuserve.service.output import encode_png

    width, height = (int(part) for part in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_sd(Path(tmp) / "tiny-sd")
        backend = DiffusersBackend(ModelSpec(name="bench", source=str(model)))
        backend.load()
        server = start_server(["--model", f"bench={model}"], Path(tmp))
        http: list[float] = []
        direct: list[float] = []
        try:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x",
                                   max_retries=0)
            for i in range(args.requests + 2):
                started = time.perf_counter()
                client.images.generate(
                    model="bench", prompt="a red apple", size=args.size,  # type: ignore[arg-type]
                    response_format="b64_json",
                    extra_body={"seed": i, "num_inference_steps": args.steps},
                )
                http_seconds = time.perf_counter() - started
                params = GenerationParams(prompt="a red apple", negative_prompt=None,
                                          width=width, height=height,
                                          num_inference_steps=args.steps, guidance_scale=7.5,
                                          seeds=(i,))
                started = time.perf_counter()
                image = backend.generate(params)[0]
                base64.b64encode(encode_png(image))
                direct_seconds = time.perf_counter() - started
                if i >= 2:  # the first calls warm up
                    http.append(http_seconds)
                    direct.append(direct_seconds)
        finally:
            server.stop()

    http_median = statistics.median(http)
    direct_median = statistics.median(direct)
    print(f"model: {model}  size: {args.size}  steps: {args.steps}  requests: {args.requests}")
    print(f"in-process median: {direct_median * 1000:8.1f} ms")
    print(f"HTTP+SDK median:   {http_median * 1000:8.1f} ms")
    print(f"overhead:          {(http_median - direct_median) * 1000:8.1f} ms "
          f"({http_median / direct_median:.3f}x)")


if __name__ == "__main__":
    main()

"""What loading models on demand costs: a live ``diffuserve serve`` with
``--max-loaded-models 1`` serving two copies of the built-in model (``a`` and ``b``),
driven by the openai SDK.

1. **warm**: requests to the loaded model (median seconds);
2. **switch**: requests alternating between ``a`` and ``b``, so that each one unloads
   the other model and loads its own first (median seconds; the difference to warm is
   what a switch costs);
3. **memory**: the server's RSS with ``a`` loaded, after an admin unload of ``a`` (no
   model loaded), and after ``--cycles`` more switches (a leak would grow it), with the
   weight bytes ``/v1/models`` reports.

    python benchmarks/residency.py [--rounds 5] [--cycles 10] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import openai  # noqa: E402
import psutil  # noqa: E402

from diffuserve.builtin import WEIGHTS_DIR  # noqa: E402
from tests.support.live_server import LiveServer, start_server  # noqa: E402

ADMIN_KEY = "sk-bench-admin-0123456789"
MIB = 2**20


def draw(client: openai.OpenAI, model: str, steps: int) -> float:
    started = time.perf_counter()
    client.images.generate(model=model, prompt="a red apple", size="256x256",
                           response_format="b64_json",
                           extra_body={"num_inference_steps": steps, "seed": 1})
    return time.perf_counter() - started


def rss_mib(server: LiveServer) -> float:
    return psutil.Process(server.process.pid).memory_info().rss / MIB


def entries(server: LiveServer) -> dict[str, Any]:
    listing = httpx.get(f"{server.base_url}/v1/models",
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]
    return {entry["id"]: entry for entry in listing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "keys").write_text(f"{ADMIN_KEY} bench role=admin\n")
        (root / "models.toml").write_text(
            f'[[models]]\nname = "a"\nsource = "{WEIGHTS_DIR}"\n\n'
            f'[[models]]\nname = "b"\nsource = "{WEIGHTS_DIR}"\n')
        server = start_server(["--models-file", str(root / "models.toml"),
                               "--api-keys-file", str(root / "keys"),
                               "--max-loaded-models", "1"], root, timeout=600)
        try:
            with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=ADMIN_KEY,
                               max_retries=0, timeout=300) as client:
                draw(client, "a", args.steps)  # first call's one-off costs
                warm = statistics.median(draw(client, "a", args.steps)
                                         for _ in range(args.rounds))
                switch = statistics.median(
                    draw(client, "b" if index % 2 == 0 else "a", args.steps)
                    for index in range(args.rounds * 2))
                draw(client, "a", args.steps)
                loaded_rss = rss_mib(server)
                weight_bytes = entries(server)["a"]["weight_bytes"]
                client.post("/models/a/unload", cast_to=dict)
                time.sleep(1.0)
                empty_rss = rss_mib(server)
                for index in range(args.cycles * 2):
                    draw(client, "b" if index % 2 == 0 else "a", args.steps)
                cycled_rss = rss_mib(server)
        finally:
            server.stop()
    print(f"built-in model, 256x256, {args.steps} steps, --max-loaded-models 1")
    print(f"| warm request | {warm:.2f} s |")
    print(f"| request that switches model (unload + load + draw) | {switch:.2f} s "
          f"(+{switch - warm:.2f} s, {switch / warm:.1f}x) |")
    print(f"| weight bytes of one copy (/v1/models) | {weight_bytes / MIB:.1f} MiB |")
    print(f"| server RSS, one model loaded | {loaded_rss:.0f} MiB |")
    print(f"| server RSS after the admin unload | {empty_rss:.0f} MiB "
          f"({empty_rss - loaded_rss:+.0f}) |")
    print(f"| server RSS after {args.cycles * 2} more switches | {cycled_rss:.0f} MiB "
          f"({cycled_rss - loaded_rss:+.0f} vs one loaded) |")


if __name__ == "__main__":
    main()

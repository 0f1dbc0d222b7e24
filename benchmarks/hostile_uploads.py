"""What hostile or heavy uploads cost a live server: /health's stall, RSS, fetch counts.

Starts ``diffuserve serve`` (the built-in model, or ``--model``) on a loopback port and,
while a thread polls ``/health`` every 50 ms, sends:

1. ``--attacks`` edit requests (default 3, one after another), each 16 small PNGs of a
   flat 6320x6320 canvas (40 MP, ~120 KB each) as ``image[]`` for gpt-image-1 (a name
   that takes 16, served by a model that edits one);
2. ``--concurrent`` (default 8) valid single-image 40 MP edits at once.

Prints, per phase: statuses, the longest /health answer, RSS (VmRSS) after the phase and
its peak so far (VmHWM), and again 20 s after the last phase. (How many remote fetches a
request can cause is a test: tests/api/test_remote.py.) Run it on old and new
code alike:

    python benchmarks/hostile_uploads.py
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.live_server import LiveServer, start_server  # noqa: E402

SIDE = 6320  # 39.9 MP: just under the per-image limit


def flat_png(side: int = SIDE) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


class HealthProbe:
    """Polls /health every 50 ms in a thread; keeps the longest answer of each phase."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(f"{self.base_url}/health")
                self.longest = max(self.longest, time.perf_counter() - started)
                time.sleep(0.05)

    def phase(self) -> float:
        longest, self.longest = self.longest, 0.0
        return longest

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def report(name: str, statuses: list[int], server: LiveServer, probe: HealthProbe) -> None:
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(json.dumps({"phase": name, "statuses": counts,
                      "health_longest_s": round(probe.phase(), 3),
                      **memory(server.process.pid)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attacks", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--model", action="append", default=[])
    args = parser.parse_args()

    image = flat_png()
    with tempfile.TemporaryDirectory() as tmp:
        model_args = [arg for spec in args.model for arg in ("--model", spec)]
        server = start_server(model_args, Path(tmp), timeout=300)
        try:
            with HealthProbe(server.base_url) as probe, \
                    httpx.Client(base_url=server.base_url, timeout=600) as client:
                print(json.dumps({"phase": "ready", **memory(server.process.pid)}),
                      flush=True)
                probe.phase()
                statuses = []
                for _ in range(args.attacks):
                    files = [("image[]", (f"{i}.png", image, "image/png")) for i in range(16)]
                    statuses.append(client.post("/v1/images/edits", files=files, data={
                        "prompt": "x", "model": "gpt-image-1"}).status_code)
                report("16 x 40 MP image[] for gpt-image-1", statuses, server, probe)

                def one_edit(_: int) -> int:
                    with httpx.Client(base_url=server.base_url, timeout=600) as own:
                        return own.post("/v1/images/edits", files={
                            "image": ("a.png", image, "image/png")}, data={
                            "prompt": "a red square", "model": "dall-e-2",
                            "size": "256x256", "response_format": "b64_json"}).status_code

                with ThreadPoolExecutor(args.concurrent) as pool:
                    statuses = list(pool.map(one_edit, range(args.concurrent)))
                report(f"{args.concurrent} concurrent 40 MP edits", statuses, server, probe)

                time.sleep(20)
                report("20 s later", [], server, probe)
        finally:
            server.stop()


if __name__ == "__main__":
    main()

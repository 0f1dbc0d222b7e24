"""A bounded load test: many concurrent openai SDK clients against one small-queue server.

:func:`run_load_test` builds the tiny random SD pipeline the tests use (or takes a
model), starts ``diffuserve serve`` on a loopback port with a small queue, and lets
``clients`` threads (one ``openai.OpenAI`` each, ``max_retries=0``) send requests that mix
model names, sizes, ``n`` and ``response_format``. Every request must end in 200 or 429
(with ``Retry-After``): no 5xx, no timeout, no reset connection. Every image is checked,
the server's RSS is sampled throughout, and its ``/metrics`` must agree with what the
clients saw. Used by ``tests/e2e/test_load.py`` and ``benchmarks/load_test.py``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live_server import LiveServer, start_server
from tests.support.tiny_pipelines import build_tiny_sd

MODEL_NAME = "tiny"
#: Sizes each requested name accepts, among those this test uses.
SIZES_BY_NAME = {
    MODEL_NAME: ("256x256", "512x512", "1024x1024", "1792x1024"),
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024"),
}
FORMATS = ("url", "b64_json")


# --- the workload ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One request to send."""

    model: str
    size: str
    n: int
    response_format: str

    @property
    def dimensions(self) -> tuple[int, int]:
        width, height = self.size.split("x")
        return int(width), int(height)


def request_mix(count: int, seed: int = 0) -> list[Spec]:
    """``count`` requests cycling through every valid (name, size, n, format) combination
    in a seeded shuffled order, so every combination appears about equally often."""
    combos = [
        Spec(name, size, n, fmt)
        for name, sizes in SIZES_BY_NAME.items()
        for size in sizes
        for n in ((1,) if name == "dall-e-3" else (1, 2, 3))
        for fmt in FORMATS
    ]
    rng = random.Random(seed)
    plan: list[Spec] = []
    while len(plan) < count:
        rng.shuffle(combos)
        plan.extend(combos)
    return plan[:count]


@dataclass
class Outcome:
    """What one request got."""

    client: int
    index: int
    spec: Spec
    #: an HTTP status, or "timeout", "connection", "not_sent", "error"
    status: int | str = "not_sent"
    latency: float = 0.0
    retry_after: str | None = None
    problems: list[str] = field(default_factory=list)


def _png_size(data: bytes) -> tuple[int, int]:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG")
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def _check_images(outcome: Outcome, data: Sequence[Any], base_url: str,
                  fetcher: httpx.Client) -> None:
    spec = outcome.spec
    if len(data) != spec.n:
        outcome.problems.append(f"{len(data)} images for n={spec.n}")
    for item in data:
        try:
            if spec.response_format == "b64_json":
                if item.url is not None or not item.b64_json:
                    raise ValueError("b64_json asked, no b64_json given")
                png = base64.b64decode(item.b64_json, validate=True)
            else:
                if item.b64_json is not None or not item.url:
                    raise ValueError("url asked, no url given")
                if not item.url.startswith(base_url + "/"):
                    raise ValueError(f"url {item.url} is not on {base_url}")
                got = fetcher.get(item.url)  # no Authorization header: the link is enough
                if got.status_code != 200:
                    raise ValueError(f"GET url -> {got.status_code}")
                if got.headers.get("content-type") != "image/png":
                    raise ValueError(f"url content-type {got.headers.get('content-type')}")
                png = got.content
            size = _png_size(png)
            if size != spec.dimensions:
                raise ValueError(f"image is {size[0]}x{size[1]}, asked {spec.size}")
        except Exception as exc:  # every problem is recorded, none stops the client
            outcome.problems.append(f"{type(exc).__name__}: {exc}")


def _run_client(number: int, specs: Sequence[Spec], base_url: str, steps: int,
                timeout: float, stop_sending: threading.Event, backoff_cap: float,
                start: threading.Barrier, outcomes: list[Outcome]) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-load-test", max_retries=0,
                           timeout=timeout)
    fetcher = httpx.Client(timeout=timeout)
    mine = [Outcome(number, index, spec) for index, spec in enumerate(specs)]
    outcomes.extend(mine)  # list.extend is atomic under the GIL
    try:
        start.wait()
        for outcome in mine:
            if stop_sending.is_set():
                break  # stays "not_sent": the run's time limit is up
            spec = outcome.spec
            began = time.perf_counter()
            try:
                response = client.images.generate(
                    model=spec.model, prompt=f"load test: client {number}, request "
                    f"{outcome.index}, a lighthouse at dusk", n=spec.n,
                    size=spec.size,  # type: ignore[arg-type]
                    response_format=spec.response_format,  # type: ignore[arg-type]
                    extra_body={"num_inference_steps": steps,
                                "seed": number * 1000 + outcome.index},
                )
            except openai.APITimeoutError:
                outcome.status = "timeout"
            except openai.APIConnectionError as exc:
                outcome.status = "connection"
                outcome.problems.append(f"{type(exc).__name__}: {exc!r}")
            except openai.APIStatusError as exc:
                outcome.status = exc.status_code
                outcome.retry_after = exc.response.headers.get("retry-after")
                if exc.status_code != 429:
                    outcome.problems.append(f"{exc.status_code}: {exc.message}")
            except Exception as exc:
                outcome.status = "error"
                outcome.problems.append(f"{type(exc).__name__}: {exc}")
            else:
                outcome.status = 200
                outcome.latency = time.perf_counter() - began
                _check_images(outcome, response.data, base_url, fetcher)
            if outcome.status == 429 and backoff_cap > 0:
                # A polite client waits as told; capped so the run stays short.
                try:
                    wait = float(outcome.retry_after or 1)
                except ValueError:
                    wait = 1.0
                time.sleep(min(wait, backoff_cap) * random.uniform(0.5, 1.0))
    finally:
        fetcher.close()
        client.close()


# --- what the server reports -------------------------------------------------------------


class RssSampler(threading.Thread):
    """Reads VmRSS of one process from /proc every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def read_kib(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def run(self) -> None:
        while not self._stop_event.is_set():
            kib = self.read_kib()
            if kib is not None:
                self.samples.append(kib)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    @property
    def peak_mib(self) -> float:
        return max(self.samples, default=0) / 1024


def scrape_metrics(base_url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of ``/metrics`` by sample name: [(labels, value), …]."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).raise_for_status().text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def histogram_buckets(samples: dict[str, list[tuple[dict[str, str], float]]],
                      name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of a histogram, summed over its labels."""
    totals: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", []):
        bound = float(labels["le"])
        totals[bound] = totals.get(bound, 0.0) + value
    return sorted(totals.items())


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding rank q."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, cumulative
    return lower


def bucket_counts(buckets: Sequence[tuple[float, float]]) -> dict[str, int]:
    """Non-empty buckets of a cumulative histogram as {"le": count}."""
    counts: dict[str, int] = {}
    below = 0.0
    for bound, cumulative in buckets:
        if cumulative > below:
            counts[f"{bound:g}"] = int(cumulative - below)
        below = cumulative
    return counts


def sum_samples(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
                **labels: str) -> float:
    return sum(value for sample_labels, value in samples.get(name, [])
               if all(sample_labels.get(k) == v for k, v in labels.items()))


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def server_log_entries(server: LiveServer) -> list[dict[str, Any]]:
    entries = []
    for line in server.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


# --- the run -----------------------------------------------------------------------------


def run_load_test(
    *,
    clients: int = 64,
    requests_per_client: int = 4,
    max_queue: int = 8,
    steps: int = 2,
    timeout: float = 60.0,
    server_timeout: float = 45.0,
    time_limit: float = 300.0,
    rss_limit_mb: float = 3072.0,
    backoff_cap: float = 1.0,
    seed: int = 0,
    model: Path | None = None,
    server_args: Sequence[str] = (),
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the load test; returns the numbers and ``failures`` (empty when all passed).

    ``timeout`` bounds each request on the client side; ``server_timeout`` is the
    server's ``--request-timeout`` (keep it below ``timeout``); after ``time_limit``
    seconds clients stop sending. After a 429 a client sleeps ``Retry-After`` capped at
    ``backoff_cap`` seconds (0: not at all) before its next request.
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp_name:
        tmp = Path(tmp_name)
        model_path = model or build_tiny_sd(tmp / "tiny-sd")
        server = start_server(
            ["--model", f"{MODEL_NAME}={model_path}", "--max-queue", str(max_queue),
             "--request-timeout", f"{server_timeout:g}", *server_args], tmp)
        sampler = RssSampler(server.process.pid)
        sampler.start()
        try:
            idle_rss_mib = (sampler.read_kib() or 0) / 1024
            result = _drive(server, clients=clients, requests_per_client=requests_per_client,
                            steps=steps, timeout=timeout, time_limit=time_limit,
                            backoff_cap=backoff_cap, seed=seed)
            alive = server.process.poll() is None
        finally:
            sampler.stop()
            exit_code = server.stop()
        result["config"] = {
            "clients": clients, "requests_per_client": requests_per_client,
            "max_queue": max_queue, "steps": steps, "timeout": timeout,
            "server_timeout": server_timeout, "time_limit": time_limit,
            "backoff_cap": backoff_cap, "server_args": list(server_args),
            "model": str(model) if model else "tiny random SD (64 px native)",
        }
        result["rss_mib"] = {"idle": round(idle_rss_mib, 1),
                             "peak": round(sampler.peak_mib, 1),
                             "samples": len(sampler.samples)}
        result["server_exit_code"] = exit_code
        failures: list[str] = result["failures"]
        if not alive:
            failures.append("the server process died during the run")
        if exit_code != 0:
            failures.append(f"the server exited with {exit_code} on SIGTERM")
        if sampler.peak_mib >= rss_limit_mb:
            failures.append(f"server peak RSS {sampler.peak_mib:.0f} MiB >= {rss_limit_mb:g}")
        if not sampler.samples:
            failures.append("no RSS sample could be read")
        result["ok"] = not failures
        return result


def _drive(server: LiveServer, *, clients: int, requests_per_client: int, steps: int,
           timeout: float, time_limit: float, backoff_cap: float,
           seed: int) -> dict[str, Any]:
    base_url = server.base_url
    plan = request_mix(clients * requests_per_client, seed)
    outcomes: list[Outcome] = []
    start = threading.Barrier(clients + 1)
    stop_sending = threading.Event()
    threads = [
        threading.Thread(
            target=_run_client, name=f"client-{number}", daemon=True,
            args=(number, plan[number * requests_per_client:(number + 1) * requests_per_client],
                  base_url, steps, timeout, stop_sending, backoff_cap, start, outcomes))
        for number in range(clients)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join(timeout=max(0.0, began + time_limit - time.monotonic()))
    stop_sending.set()  # the time limit is up: nobody starts another request
    for thread in threads:
        # A request already sent may still take ``timeout``; a thread alive after that hangs.
        thread.join(timeout=max(0.0, began + time_limit + timeout + 10 - time.monotonic()))
    wall = time.monotonic() - began
    hung = [thread.name for thread in threads if thread.is_alive()]
    # A response is counted before it is sent, so the counts are final once every client
    # has its answer; only a client that gave up can leave the server still working.
    sent = sum(1 for outcome in outcomes if outcome.status != "not_sent")
    settle = time.monotonic() + 10
    while True:
        metrics = scrape_metrics(base_url)
        if sum_samples(metrics, "diffuserve_requests_total") >= sent \
                or time.monotonic() > settle:
            break
        time.sleep(0.2)
    logs = server_log_entries(server)
    return _report(outcomes, metrics, logs, wall, hung, clients * requests_per_client)


def _report(outcomes: list[Outcome], metrics: dict[str, list[tuple[dict[str, str], float]]],
            logs: list[dict[str, Any]], wall: float, hung: list[str],
            expected: int) -> dict[str, Any]:
    failures: list[str] = []
    statuses = Counter(str(outcome.status) for outcome in outcomes)
    ok = [outcome for outcome in outcomes if outcome.status == 200]
    limited = [outcome for outcome in outcomes if outcome.status == 429]
    images = sum(outcome.spec.n for outcome in ok)

    # 1. What the clients saw.
    if len(outcomes) != expected:
        failures.append(f"{len(outcomes)} requests planned by the clients, {expected} expected")
    unexpected = [outcome for outcome in outcomes if outcome.status not in (200, 429)]
    if unexpected:
        examples = "; ".join(f"{o.status} {o.spec.model} {o.spec.size} n={o.spec.n}: "
                             f"{o.problems[:1]}" for o in unexpected[:5])
        failures.append(f"{len(unexpected)} requests ended neither 200 nor 429 "
                        f"({dict(statuses)}): {examples}")
    bad_retry = [o for o in limited if not (o.retry_after or "").isdigit()
                 or int(o.retry_after or 0) < 1]
    if bad_retry:
        failures.append(f"{len(bad_retry)} 429s without a valid Retry-After "
                        f"(e.g. {bad_retry[0].retry_after!r})")
    broken = [o for o in ok if o.problems]
    if broken:
        failures.append(f"{len(broken)} 200s with wrong images, e.g. {broken[0].spec}: "
                        f"{broken[0].problems[:3]}")
    if hung:
        failures.append(f"{len(hung)} clients still waiting at the end: {hung[:5]}")
    if not ok:
        failures.append("no request succeeded")

    # 2. What the server counted.
    counted = {status: sum_samples(metrics, "diffuserve_requests_total", status=status)
               for status in ("200", "429")}
    counted_all = sum_samples(metrics, "diffuserve_requests_total")
    drawn = sum_samples(metrics, "diffuserve_images_generated_total")
    if counted["200"] != len(ok) or counted["429"] != len(limited):
        failures.append(f"/metrics counts {counted['200']:g}x200 and {counted['429']:g}x429, "
                        f"the clients saw {len(ok)} and {len(limited)}")
    sent = sum(1 for outcome in outcomes if outcome.status != "not_sent")
    if counted_all != sent:
        failures.append(f"/metrics counts {counted_all:g} requests, the clients sent {sent}")
    if drawn != images:
        failures.append(f"/metrics counts {drawn:g} images generated, the clients got {images}")
    depth = sum_samples(metrics, "diffuserve_queue_depth")
    if depth != 0:
        failures.append(f"queue depth is {depth:g} after the run, not 0")
    errors = [entry for entry in logs if entry.get("level") in ("error", "critical")]
    if errors:
        failures.append(f"{len(errors)} error lines in the server log, e.g. "
                        f"{errors[0].get('message')!r}: {str(errors[0])[:300]}")
    warnings = Counter(str(entry.get("message")) for entry in logs
                       if entry.get("level") == "warning")

    # 3. The numbers.
    latencies = [outcome.latency for outcome in ok]
    waits = histogram_buckets(metrics, "diffuserve_queue_wait_seconds")
    batch_buckets = histogram_buckets(metrics, "diffuserve_batch_images")
    batches = sum_samples(metrics, "diffuserve_batch_images_count")
    logged_waits = [float(entry["queue_seconds"]) for entry in logs
                    if entry.get("message") == "generation" and "queue_seconds" in entry]
    generation_count = sum_samples(metrics, "diffuserve_generation_seconds_count")
    by_name: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        row = by_name.setdefault(outcome.spec.model, {})
        row[str(outcome.status)] = row.get(str(outcome.status), 0) + 1
    retry_values = [int(o.retry_after) for o in limited if (o.retry_after or "").isdigit()]

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "failures": failures,
        "requests": len(outcomes),
        "statuses": dict(sorted(statuses.items())),
        "by_requested_model": by_name,
        "images": images,
        "wall_seconds": round(wall, 2),
        "images_per_second": round(images / wall, 2) if wall else None,
        "ok_requests_per_second": round(len(ok) / wall, 2) if wall else None,
        "latency_ms": {f"p{q}": ms(percentile(latencies, q)) for q in (50, 90, 99)},
        "queue_wait_ms": {
            "histogram_p50": ms(histogram_quantile(0.5, waits)),
            "histogram_p90": ms(histogram_quantile(0.9, waits)),
            "log_p50": ms(percentile(logged_waits, 50)),
            "log_p90": ms(percentile(logged_waits, 90)),
            "log_max": ms(max(logged_waits, default=None)),
        },
        "retry_after_seconds": {"min": min(retry_values, default=None),
                                "max": max(retry_values, default=None)},
        "batches": int(batches),
        "batch_images": bucket_counts(batch_buckets),
        "mean_batch_images": round(sum_samples(metrics, "diffuserve_batch_images_sum")
                                   / batches, 2) if batches else None,
        "mean_generation_ms": ms(sum_samples(metrics, "diffuserve_generation_seconds_sum")
                                 / generation_count) if generation_count else None,
        "metrics": {"requests_200": counted["200"], "requests_429": counted["429"],
                    "requests_all": counted_all, "images_generated": drawn},
        "server_warnings": dict(warnings),
    }


def format_summary(result: dict[str, Any]) -> str:
    config = result["config"]
    lat, wait, rss = result["latency_ms"], result["queue_wait_ms"], result["rss_mib"]
    lines = [
        f"load test: {config['clients']} clients x {config['requests_per_client']} requests, "
        f"max-queue {config['max_queue']}, {config['steps']} steps, model {config['model']}"
        + (f", server args {config['server_args']}" if config["server_args"] else ""),
        f"statuses:        {result['statuses']}",
        f"by name:         {result['by_requested_model']}",
        f"wall:            {result['wall_seconds']:.1f} s; {result['images']} images, "
        f"{result['images_per_second']} images/s, {result['ok_requests_per_second']} 200s/s",
        f"latency (200s):  p50 {lat['p50']} ms  p90 {lat['p90']} ms  p99 {lat['p99']} ms",
        f"queue wait:      p50 {wait['histogram_p50']} ms  p90 {wait['histogram_p90']} ms "
        f"(histogram); p50 {wait['log_p50']} ms  p90 {wait['log_p90']} ms  "
        f"max {wait['log_max']} ms (log)",
        f"Retry-After:     {result['retry_after_seconds']}",
        f"batches:         {result['batches']}, images per batch (le: count) "
        f"{result['batch_images']}, mean {result['mean_batch_images']}, "
        f"mean pipeline call {result['mean_generation_ms']} ms",
        f"server RSS:      idle {rss['idle']} MiB, peak {rss['peak']} MiB "
        f"({rss['samples']} samples)",
        f"/metrics:        {result['metrics']}",
    ]
    if result["server_warnings"]:
        lines.append(f"server warnings: {result['server_warnings']}")
    lines.append("checks:          " + ("all passed" if result["ok"] else "FAILED"))
    lines.extend(f"  - {failure}" for failure in result["failures"])
    return "\n".join(lines)

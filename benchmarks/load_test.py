"""A bounded load test: many concurrent openai SDK clients against one small-queue server.

Builds the tiny random SD pipeline the tests use (or takes ``--model``), starts
``diffuserve serve`` on a loopback port with a small queue, and lets ``--clients``
threads (one ``openai.OpenAI`` each, ``max_retries=0``) send ``--requests`` requests each,
mixing model names (a generic name, dall-e-2, dall-e-3), sizes, ``n`` and
``response_format``. Every request must end in 200 or 429 (with ``Retry-After``): no
5xx, no timeout, no reset connection. Every image is checked (count, PNG, exact size;
``url`` links fetched without a key), the server's RSS is sampled throughout, and its
``/metrics`` must agree with what the clients saw. The run is bounded: a per-request
timeout and an overall time limit, after which clients stop sending.

    python benchmarks/load_test.py [--clients 64] [--requests 4] [--max-queue 8] [--steps 2]
    python benchmarks/load_test.py --model ./my-pipeline --server-arg=--no-batching

Exits 1 when a check fails.
"""


from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.support.load import format_summary, run_load_test  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="client timeout per request, seconds")
    parser.add_argument("--server-timeout", type=float, default=45.0,
                        help="the server's --request-timeout")
    parser.add_argument("--time-limit", type=float, default=300.0,
                        help="seconds after which clients stop sending")
    parser.add_argument("--rss-limit-mb", type=float, default=3072.0)
    parser.add_argument("--backoff-cap", type=float, default=1.0,
                        help="after a 429, sleep Retry-After capped at this (0: no sleep)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="a local diffusers pipeline folder")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra `diffuserve serve` argument (repeatable), "
                             "e.g. --server-arg=--no-batching")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run_load_test(
        clients=args.clients, requests_per_client=args.requests, max_queue=args.max_queue,
        steps=args.steps, timeout=args.timeout, server_timeout=args.server_timeout,
        time_limit=args.time_limit, rss_limit_mb=args.rss_limit_mb,
        backoff_cap=args.backoff_cap, seed=args.seed, model=args.model,
        server_args=args.server_arg,
    )
    result["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2) if args.json else format_summary(result))
    print(f"total (build, start, load, stop): {result['total_seconds']} s")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

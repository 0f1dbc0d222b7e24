"""Load: 64 concurrent openai SDK clients x 4 requests against a server with a small queue.

Runs :func:`tests.support.load.run_load_test` on the tiny SD pipeline (64 px, 2 steps):
every request ends in 200 or 429 with Retry-After, every image is right, the server's
memory stays bounded and its /metrics agree with what the clients saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.load import format_summary, run_load_test

pytestmark = pytest.mark.e2e

CLIENTS = 64
REQUESTS_PER_CLIENT = 4
RSS_LIMIT_MB = 3072


@pytest.fixture(scope="module")
def load_result(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
                ) -> dict[str, Any]:
    # The time limits only stop a run that hangs: an idle machine runs it in about 10 s,
    # and a busy one must not turn slow answers into failures (timeouts, requests never
    # sent). What is judged is what the server answered and counted.
    result = run_load_test(
        clients=CLIENTS, requests_per_client=REQUESTS_PER_CLIENT, max_queue=8, steps=2,
        timeout=360.0, server_timeout=300.0, time_limit=600.0, rss_limit_mb=RSS_LIMIT_MB,
        model=tiny_models["sd"], workdir=tmp_path_factory.mktemp("load"),
    )
    print(format_summary(result))
    return result


def test_every_request_is_answered_200_or_429(load_result: dict[str, Any]) -> None:
    assert load_result["requests"] == CLIENTS * REQUESTS_PER_CLIENT
    assert set(load_result["statuses"]) <= {"200", "429"}, load_result["failures"]
    assert load_result["statuses"].get("200", 0) > 0


def test_the_small_queue_refuses_some_requests_with_retry_after(
        load_result: dict[str, Any]) -> None:
    assert load_result["statuses"].get("429", 0) > 0
    assert load_result["retry_after_seconds"]["min"] >= 1
    assert not [f for f in load_result["failures"] if "Retry-After" in f]


def test_every_image_has_the_requested_count_and_size(load_result: dict[str, Any]) -> None:
    assert not [f for f in load_result["failures"] if "wrong images" in f]


def test_server_memory_stays_bounded(load_result: dict[str, Any]) -> None:
    assert load_result["rss_mib"]["samples"] > 0
    assert 0 < load_result["rss_mib"]["peak"] < RSS_LIMIT_MB


def test_metrics_agree_with_the_clients(load_result: dict[str, Any]) -> None:
    counted = load_result["metrics"]
    assert counted["requests_200"] == load_result["statuses"].get("200", 0)
    assert counted["requests_429"] == load_result["statuses"].get("429", 0)
    assert counted["requests_all"] == load_result["requests"]
    assert counted["images_generated"] == load_result["images"]


def test_requests_were_batched(load_result: dict[str, Any]) -> None:
    assert load_result["mean_batch_images"] > 1


def test_the_run_passes_every_check(load_result: dict[str, Any]) -> None:
    """Also: no hung client, no error line in the server log, a clean exit on SIGTERM."""
    assert load_result["failures"] == []
    assert load_result["server_exit_code"] == 0

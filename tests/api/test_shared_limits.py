"""--rate-limit-storage redis://…: the limits of a key hold across replicas and restarts.

Each "replica" is a whole app built by build_app, in this process, over a fake backend;
they share nothing but the Redis they are pointed at.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from diffuserve.api.ratelimit import RateLimitStorageUnavailable
from tests.api.test_app import AUTH, assert_envelope, generate, make_client
from tests.conftest import FakeBackend
from tests.support.redis_server import RedisServer, free_port


def replica(tmp_path: Path, name: str, storage: str, **settings: object) -> TestClient:
    return make_client(tmp_path / name, FakeBackend(), rate_limit_storage=storage, **settings)


def remaining(response: object, kind: str) -> str:
    return str(response.headers[f"x-ratelimit-remaining-{kind}"])  # type: ignore[attr-defined]


def test_two_replicas_let_a_key_draw_its_limit_once_in_total(tmp_path: Path,
                                                            redis_url: str) -> None:
    with replica(tmp_path, "a", redis_url, rate_limit_rpm=3, rate_limit_ipm=4) as a, \
            replica(tmp_path, "b", redis_url, rate_limit_rpm=3, rate_limit_ipm=4) as b:
        first = generate(a, prompt="x", n=2)
        assert (first.status_code, remaining(first, "images")) == (200, "2")
        second = generate(b, prompt="x", n=1)
        assert (second.status_code, remaining(second, "images")) == (200, "1")
        assert remaining(second, "requests") == "1"  # one request already counted on a
        # Two images would overdraw what a and b took together: refused, nothing taken.
        refused = generate(a, prompt="x", n=2)
        assert_envelope(refused, 429, "rate_limit_exceeded")
        assert "Limit: 4/1min. Current: 5/1min." in refused.json()["error"]["message"]
        last = generate(b, prompt="x", n=1)
        assert (last.status_code, remaining(last, "requests"),
                remaining(last, "images")) == (200, "0", "0")
        assert generate(a, prompt="x", n=1).status_code == 429
        assert generate(b, prompt="x", n=1).status_code == 429


def test_a_limit_survives_a_restart(tmp_path: Path, redis_url: str) -> None:
    with replica(tmp_path, "a", redis_url, rate_limit_rpm=2) as before:
        assert generate(before, prompt="x").status_code == 200
        assert generate(before, prompt="x").status_code == 200
    with replica(tmp_path, "a", redis_url, rate_limit_rpm=2) as after:
        refused = generate(after, prompt="x")
    assert_envelope(refused, 429, "rate_limit_exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_in_memory_limits_are_per_process(tmp_path: Path) -> None:
    # The default: each replica counts alone, and a restart forgets.
    with replica(tmp_path, "a", "memory://", rate_limit_rpm=1) as a, \
            replica(tmp_path, "b", "memory://", rate_limit_rpm=1) as b:
        assert generate(a, prompt="x").status_code == 200
        assert generate(b, prompt="x").status_code == 200
        assert generate(a, prompt="x").status_code == 429


def test_when_redis_goes_away_requests_are_served_unchecked_and_counted(
    tmp_path: Path, own_redis: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    backend = FakeBackend()
    with make_client(tmp_path, backend, rate_limit_storage=own_redis.url(),
                     rate_limit_rpm=1) as client:
        assert generate(client, prompt="before").status_code == 200
        own_redis.stop()
        with caplog.at_level(logging.WARNING, logger="diffuserve.ratelimit"):
            during = [generate(client, prompt="during") for _ in range(2)]
        metrics = client.get("/metrics", headers=AUTH).text
    # Fail open: served (never a 5xx), without limit headers, and counted.
    assert [response.status_code for response in during] == [200, 200]
    assert all("x-ratelimit-limit-requests" not in r.headers for r in during)
    assert [call.prompt for call in backend.calls] == ["before", "during", "during"]
    assert "diffuserve_rate_limit_unchecked_total 2.0" in metrics
    assert "rate-limit storage unreachable" in caplog.text


def test_start_up_stops_when_redis_does_not_answer(tmp_path: Path) -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    backend = FakeBackend(loaded=False)
    with pytest.raises(RateLimitStorageUnavailable) as caught, \
            make_client(tmp_path, backend, rate_limit_storage=url):
        pass
    assert "s3cret-pw" not in str(caught.value)
    assert "redis://:***@127.0.0.1" in str(caught.value)
    assert not backend.loaded  # stopped before any model loaded


def test_serve_exits_at_once_with_a_readable_message(tmp_path: Path) -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "diffuserve", "serve", "--port", str(free_port()),
         "--storage-dir", str(tmp_path / "images"), "--model", "fake=/nonexistent",
         "--rate-limit-storage", url],
        capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "s3cret-pw" not in output
    assert "diffuserve: the rate-limit storage redis://:***@127.0.0.1:" in output
    assert "does not answer" in output
    assert time.monotonic() - started < 60

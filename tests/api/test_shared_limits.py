"""--rate-limit-storage redis://…: the limits of a key hold across replicas and restarts.

Each "replica" is a whole app built by build_app, in this process, over a fake backend;
they share nothing but the Redis they are pointed at. One test drives a live
``diffuserve serve`` process through a hung Redis.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from diffuserve.api.ratelimit import RateLimitStorageUnavailable
from tests.support.clients import AUTH, assert_envelope, generate, make_client
from tests.support.fakes import FakeBackend
from tests.support.live_server import LiveServer
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


def _outage(redis_server: RedisServer, kind: str) -> None:
    if kind == "stopped":
        redis_server.stop()  # connections refused
    else:
        redis_server.pause()  # connections accepted, nothing answered: the 1 s timeout


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_when_redis_goes_away_a_key_keeps_its_limit_and_requests_are_counted(
    tmp_path: Path, own_redis: RedisServer, caplog: pytest.LogCaptureFixture, outage: str,
) -> None:
    backend = FakeBackend()
    with make_client(tmp_path, backend, rate_limit_storage=own_redis.url(),
                     rate_limit_ipm=12) as client:
        assert remaining(generate(client, prompt="before", n=2), "images") == "10"
        _outage(own_redis, outage)
        with caplog.at_level(logging.WARNING, logger="diffuserve.ratelimit"):
            during = [generate(client, prompt="during") for _ in range(11)]
        metrics = client.get("/metrics", headers=AUTH).text
    # Counted in memory from the first request that found Redis gone, with the two
    # images drawn before: ten more, then 429 (never a 5xx, never unchecked).
    assert [r.status_code for r in during] == [200] * 10 + [429]
    assert [remaining(r, "images") for r in during[:10]] == [str(n) for n in range(9, -1, -1)]
    assert_envelope(during[10], 429, "rate_limit_exceeded")
    assert int(during[10].headers["retry-after"]) >= 1
    assert sum(len(call.seeds) for call in backend.calls) == 12
    assert "diffuserve_rate_limit_fallback_total 11.0" in metrics
    assert "diffuserve_rate_limited_total 1.0" in metrics
    assert caplog.text.count("rate-limit storage unreachable") == 1


@pytest.mark.e2e
def test_a_hung_redis_does_not_lift_a_keys_limit_on_the_live_server(
    server_factory: Callable[..., LiveServer], tiny_models: dict[str, Path],
    own_redis: RedisServer,
) -> None:
    key = "sk-live-limits"
    server = server_factory(["--model", f"tiny={tiny_models['sd']}", "--api-key", key,
                             "--rate-limit-ipm", "12",
                             "--rate-limit-storage", own_redis.url()])
    headers = {"Authorization": f"Bearer {key}"}

    def draw(n: int) -> httpx.Response:
        return httpx.post(f"{server.base_url}/v1/images/generations", headers=headers,
                          json={"prompt": "x", "n": n, "size": "256x256", "model": "tiny",
                                "num_inference_steps": 1, "response_format": "b64_json"},
                          timeout=120)

    def images_drawn() -> str:
        for line in httpx.get(f"{server.base_url}/metrics", headers=headers).text.splitlines():
            if line.startswith('diffuserve_images_generated_total{model="tiny"}'):
                return line.rsplit(" ", 1)[1]
        return "none"

    before = draw(4)
    assert (before.status_code, remaining(before, "images")) == (200, "8")
    own_redis.pause()
    during = [draw(4), draw(4), draw(4), draw(1)]
    assert [r.status_code for r in during] == [200, 200, 429, 429]
    assert [remaining(r, "images") for r in during[:2]] == ["4", "0"]
    assert int(during[2].headers["retry-after"]) >= 1
    assert images_drawn() == "12.0"  # the limit, though Redis never answered
    own_redis.resume()
    # Once Redis is asked again (after a pause of seconds), its count applies: the four
    # images drawn before the outage, not the twelve this process counted.
    deadline = time.monotonic() + 120
    while (after := draw(1)).status_code == 429:
        assert time.monotonic() < deadline, "the limits never went back to Redis"
        time.sleep(0.5)
    assert (after.status_code, remaining(after, "images")) == (200, "7")
    log = server.log()
    assert log.count("rate-limit storage unreachable") == 1
    assert log.count("rate-limit storage answers again") == 1


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

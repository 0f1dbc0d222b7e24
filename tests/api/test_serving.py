"""Serving behaviour through the HTTP layer and the official SDK, in process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from tests.support.clients import AUTH, assert_envelope, generate, make_client, sdk_for
from tests.support.fakes import FakeBackend


def in_background(client: TestClient, **body: object) -> tuple[threading.Thread,
                                                                list[httpx.Response]]:
    out: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: out.append(generate(client, **body)))
    thread.start()
    return thread, out


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text("sk-limited-000000000001 limited rpm=2 ipm=3\n"
                    "sk-free-00000000000002 free\n")
    return path


def test_per_key_limits_send_headers_and_429(tmp_path: Path, fake_backend: FakeBackend,
                                             keys_file: Path) -> None:
    with make_client(tmp_path, fake_backend, api_keys_file=keys_file,
                     rate_limit_rpm=100) as client:
        limited = sdk_for(client, "sk-limited-000000000001")
        first = limited.images.with_raw_response.generate(prompt="a", n=1)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-images"] == "3"
        assert first.headers["x-ratelimit-remaining-images"] == "2"
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        with pytest.raises(openai.RateLimitError) as caught:
            limited.images.generate(prompt="a", n=3)  # 1 + 3 images > 3 a minute
        assert caught.value.code == "rate_limit_exceeded"
        assert caught.value.type == "requests"
        assert "Limit: 3/1min. Current: 4/1min." in caught.value.message
        assert int(caught.value.response.headers["retry-after"]) >= 1
        # The key's rpm=2 applies, not the default of 100; other keys are unaffected.
        limited.images.generate(prompt="a", n=1)
        with pytest.raises(openai.RateLimitError):
            limited.images.generate(prompt="a", n=1)
        free = sdk_for(client, "sk-free-00000000000002").images.with_raw_response.generate(
            prompt="a")
        assert free.headers["x-ratelimit-limit-requests"] == "100"
        metrics = client.get("/metrics", headers=AUTH).text
        assert "diffuserve_rate_limited_total 2.0" in metrics


def test_full_queue_is_429_with_retry_after_through_the_sdk(tmp_path: Path) -> None:
    slow = FakeBackend(delay=0.5)
    with make_client(tmp_path, slow, max_queue=1) as client:
        running, _ = in_background(client, prompt="running")
        wait_for(lambda: slow.calls)
        queued, queued_out = in_background(client, prompt="queued", size="512x512")
        wait_for(lambda: "diffuserve_queue_depth{model=\"fake\"} 1.0" in
                 client.get("/metrics", headers=AUTH).text)
        with pytest.raises(openai.RateLimitError) as caught:
            sdk_for(client).images.generate(prompt="refused")
        running.join()
        queued.join()
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert "queue" in caught.value.message
    assert queued_out[0].status_code == 200


def test_deadline_while_queued_is_429_and_while_drawing_is_408(tmp_path: Path) -> None:
    slow = FakeBackend(delay=0.6)
    with make_client(tmp_path, slow, request_timeout_seconds=0.3) as client:
        running, running_out = in_background(client, prompt="running")
        wait_for(lambda: slow.calls)
        queued = generate(client, prompt="queued")
        running.join()
    error = assert_envelope(running_out[0], 408, "timeout")
    assert running_out[0].headers["x-should-retry"] == "false"
    assert "deadline" in str(error["message"])
    assert_envelope(queued, 429, "rate_limit_exceeded")
    assert queued.headers["retry-after"]
    # The queued request never reached the backend.
    assert [call.prompt for call in slow.calls] == ["running"]


def test_metrics_agree_with_responses(tmp_path: Path, fake_backend: FakeBackend) -> None:
    with make_client(tmp_path, fake_backend, metrics_max_users=1) as client:
        generate(client, prompt="a", n=2, user="alice")
        generate(client, prompt="a", n=1, user="bob")
        generate(client, prompt="a", model="nope")
        generate(client, prompt="a", size="7x7")
        assert client.get("/metrics").status_code == 401  # behind the keys
        text = client.get("/metrics", headers=AUTH).text
    assert 'diffuserve_requests_total{model="fake",status="200"} 2.0' in text
    assert 'diffuserve_requests_total{model="unknown",status="404"} 1.0' in text
    assert 'diffuserve_requests_total{model="fake",status="400"} 1.0' in text
    assert 'diffuserve_images_generated_total{model="fake"} 3.0' in text
    assert 'diffuserve_user_requests_total{user="alice"} 1.0' in text
    # Past metrics_max_users, users share one label: cardinality stays bounded.
    assert 'diffuserve_user_requests_total{user="__other__"} 1.0' in text
    assert "diffuserve_queue_wait_seconds_bucket" in text
    assert "diffuserve_generation_seconds_bucket" in text
    assert "diffuserve_batch_images_bucket" in text


def test_open_server_still_limits_per_presented_key(tmp_path: Path,
                                                   fake_backend: FakeBackend) -> None:
    with make_client(tmp_path, fake_backend, api_keys=(), rate_limit_rpm=1) as client:
        assert generate(client, prompt="a").status_code == 200
        assert generate(client, prompt="a").status_code == 429
        other = client.post("/v1/images/generations", json={"prompt": "a"},
                            headers={"Authorization": "Bearer someone-else"})
        assert other.status_code == 200

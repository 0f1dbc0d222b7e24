"""Per-key token buckets and OpenAI's rate-limit headers."""

from __future__ import annotations

import pytest

from diffuserve.api.errors import RateLimitError
from diffuserve.api.ratelimit import Limits, RateLimiter, format_reset


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [
    (0.02, "20ms"), (0.0, "0ms"), (1.0, "1s"), (1.2, "2s"), (59.5, "1m0s"), (360, "6m0s"),
])
def test_reset_durations_use_openais_format(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_no_limits_means_no_headers() -> None:
    assert RateLimiter().acquire("k", "key", Limits(), images=10) == {}


def test_requests_per_minute_with_headers_then_429() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = Limits(requests_per_minute=2)
    first = limiter.acquire("k", "alice", limits, images=1)
    assert first["x-ratelimit-limit-requests"] == "2"
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert first["x-ratelimit-reset-requests"] == "30s"
    limiter.acquire("k", "alice", limits, images=1)
    with pytest.raises(RateLimitError) as caught:
        limiter.acquire("k", "alice", limits, images=1)
    error = caught.value
    assert (error.status_code, error.error_type, error.code) == (429, "requests",
                                                                 "rate_limit_exceeded")
    assert error.message.startswith(
        "Rate limit exceeded for requests per minute for key 'alice'. Limit: 2/1min. "
        "Current: 3/1min.")
    assert error.headers["Retry-After"] == "30"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 30
    limiter.acquire("k", "alice", limits, images=1)


def test_images_per_minute_count_n() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = Limits(images_per_minute=5)
    headers = limiter.acquire("k", "bob", limits, images=4)
    assert headers["x-ratelimit-remaining-images"] == "1"
    with pytest.raises(RateLimitError) as caught:
        limiter.acquire("k", "bob", limits, images=2)
    assert "images per minute" in caught.value.message
    assert caught.value.headers["Retry-After"] == "12"  # one image comes back every 12 s
    clock.now += 12
    limiter.acquire("k", "bob", limits, images=2)


def test_a_refused_request_takes_nothing() -> None:
    limiter = RateLimiter(Clock())
    limits = Limits(requests_per_minute=10, images_per_minute=2)
    with pytest.raises(RateLimitError):
        limiter.acquire("k", "k", limits, images=3)
    headers = limiter.acquire("k", "k", limits, images=2)
    assert headers["x-ratelimit-remaining-requests"] == "9"


def test_keys_have_separate_buckets() -> None:
    limiter = RateLimiter(Clock())
    limits = Limits(requests_per_minute=1)
    limiter.acquire("a", "a", limits, images=1)
    limiter.acquire("b", "b", limits, images=1)
    with pytest.raises(RateLimitError):
        limiter.acquire("a", "a", limits, images=1)


def test_idle_clients_are_forgotten_so_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("diffuserve.api.ratelimit.MAX_BUCKETS", 10)
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = Limits(requests_per_minute=5)
    for i in range(10):
        limiter.acquire(f"client-{i}", "c", limits, images=1)
    clock.now += 60  # every bucket is full again
    limiter.acquire("newcomer", "c", limits, images=1)
    assert len(limiter) == 1

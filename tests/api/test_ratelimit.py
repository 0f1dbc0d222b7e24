"""Per-key moving-window limits and OpenAI's rate-limit headers, in memory and in Redis.

Every behaviour test runs on both storages: the limits must not depend on where they
are counted, nor on whether Redis answers (the limits then fall back to memory). Time is
a fake clock (``limits`` stamps each use with ``time.time()``), set off the whole second
so no use ever sits exactly on a window's edge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diffuserve.api.errors import RateLimitError
from diffuserve.api.ratelimit import (
    STORAGE_RETRY_SECONDS,
    Charge,
    Limits,
    RateLimiter,
    RateLimitStorageUnavailable,
    format_reset,
)
from diffuserve.logs import JsonFormatter
from tests.support.redis_server import RedisServer, free_port


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time())) + 0.25

    def __call__(self) -> float:
        return self.now


class SyncLimiter:
    """A started RateLimiter driven from a synchronous test, on one event loop."""

    def __init__(self, storage_url: str, **options: Any) -> None:
        self.runner = asyncio.Runner()
        self.limiter = RateLimiter(storage_url, **options)
        self.runner.run(self.limiter.start())

    def acquire(self, client: str, name: str, limits: Limits, images: int) -> dict[str, str]:
        return self.runner.run(self.limiter.acquire(client, name, limits, images))

    def charge(self, client: str, limits: Limits, images: int) -> Charge:
        return self.runner.run(self.limiter.charge(client, client, limits, images))

    def refused(self, client: str, limits: Limits, images: int) -> RateLimitError:
        with pytest.raises(RateLimitError) as caught:
            self.acquire(client, client, limits, images)
        return caught.value

    def close(self) -> None:
        self.runner.run(self.limiter.stop())
        self.runner.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def limiter(storage_url: str, clock: Clock) -> Iterator[SyncLimiter]:
    sync = SyncLimiter(storage_url)
    yield sync
    sync.close()


@pytest.mark.parametrize(("seconds", "text"), [
    (0.02, "20ms"), (0.0, "0ms"), (1.0, "1s"), (1.2, "2s"), (59.5, "1m0s"), (360, "6m0s"),
])
def test_reset_durations_use_openais_format(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_no_limits_means_no_headers(limiter: SyncLimiter) -> None:
    assert limiter.acquire("k", "key", Limits(), images=10) == {}


def test_requests_per_minute_with_headers_then_429(limiter: SyncLimiter,
                                                   clock: Clock) -> None:
    limits = Limits(requests_per_minute=2)
    first = limiter.acquire("k", "alice", limits, images=1)
    assert first["x-ratelimit-limit-requests"] == "2"
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert first["x-ratelimit-reset-requests"] == "1m0s"  # the first use leaves in 60 s
    clock.now += 10
    second = limiter.acquire("k", "alice", limits, images=1)
    assert second["x-ratelimit-remaining-requests"] == "0"
    assert second["x-ratelimit-reset-requests"] == "50s"
    clock.now += 0.5
    with pytest.raises(RateLimitError) as caught:
        limiter.acquire("k", "alice", limits, images=1)
    error = caught.value
    assert (error.status_code, error.error_type, error.code) == (429, "requests",
                                                                 "rate_limit_exceeded")
    assert error.message == (
        "Rate limit exceeded for requests per minute for key 'alice'. Limit: 2/1min. "
        "Current: 3/1min. Please try again in 50s.")
    assert error.headers["Retry-After"] == "50"  # 49.5 s until the first use leaves
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in error.headers
    clock.now += 49
    assert limiter.refused("k", limits, images=1).headers["Retry-After"] == "1"
    clock.now += 1  # the Retry-After given was enough
    assert limiter.acquire("k", "alice", limits, images=1)[
        "x-ratelimit-remaining-requests"] == "0"


def test_images_per_minute_count_n(limiter: SyncLimiter, clock: Clock) -> None:
    limits = Limits(images_per_minute=5)
    headers = limiter.acquire("k", "bob", limits, images=4)
    assert headers["x-ratelimit-remaining-images"] == "1"
    assert "x-ratelimit-limit-requests" not in headers
    clock.now += 0.5
    error = limiter.refused("k", limits, images=2)
    assert "images per minute" in error.message
    assert "Current: 6/1min." in error.message
    assert error.headers["Retry-After"] == "60"
    clock.now += 60
    assert limiter.acquire("k", "bob", limits, images=2)["x-ratelimit-remaining-images"] == "3"


def test_retry_after_waits_for_every_use_that_must_leave(limiter: SyncLimiter,
                                                         clock: Clock) -> None:
    limits = Limits(images_per_minute=5)
    start = clock.now
    limiter.acquire("k", "k", limits, images=2)
    clock.now = start + 20.3
    limiter.acquire("k", "k", limits, images=2)
    clock.now = start + 40.1
    limiter.acquire("k", "k", limits, images=1)
    clock.now = start + 50.6
    # Three images fit only once the uses of t=0 and t=20.3 have left: at t=80.3.
    error = limiter.refused("k", limits, images=3)
    assert error.headers["Retry-After"] == "30"
    assert error.message.endswith("Please try again in 30s.")
    assert error.headers["x-ratelimit-reset-images"] == "10s"  # the oldest use leaves
    clock.now = start + 80.1
    limiter.refused("k", limits, images=3)
    clock.now = start + 50.6 + 30
    assert limiter.acquire("k", "k", limits, images=3)["x-ratelimit-remaining-images"] == "1"


def test_a_request_that_can_never_fit_says_so_and_takes_nothing(
    limiter: SyncLimiter,
) -> None:
    limits = Limits(requests_per_minute=10, images_per_minute=2)
    error = limiter.refused("k", limits, images=3)
    assert error.message.endswith("A request for 3 images can never fit a limit of 2.")
    assert error.headers["x-should-retry"] == "false"  # the SDK must not send it again
    assert int(error.headers["Retry-After"]) >= 1
    headers = limiter.acquire("k", "k", limits, images=2)
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert headers["x-ratelimit-remaining-images"] == "0"


def test_a_request_refused_for_images_takes_no_request(limiter: SyncLimiter,
                                                       clock: Clock) -> None:
    limits = Limits(requests_per_minute=2, images_per_minute=3)
    limiter.acquire("k", "k", limits, images=2)
    clock.now += 1.5
    error = limiter.refused("k", limits, images=2)
    assert "images per minute" in error.message
    assert error.headers["x-ratelimit-remaining-requests"] == "1"
    # Had the refused request been charged, this second one would be the third.
    headers = limiter.acquire("k", "k", limits, images=1)
    assert (headers["x-ratelimit-remaining-requests"],
            headers["x-ratelimit-remaining-images"]) == ("0", "0")


def test_a_request_refused_for_requests_takes_no_image(limiter: SyncLimiter,
                                                       clock: Clock) -> None:
    limits = Limits(requests_per_minute=1, images_per_minute=10)
    limiter.acquire("k", "k", limits, images=1)
    clock.now += 30.2
    assert "requests per minute" in limiter.refused("k", limits, images=5).message
    clock.now += 30.2  # the first use has left; the refused five were never counted
    headers = limiter.acquire("k", "k", limits, images=1)
    assert headers["x-ratelimit-remaining-images"] == "9"


def test_keys_have_separate_limits(limiter: SyncLimiter) -> None:
    limits = Limits(requests_per_minute=1)
    limiter.acquire("a", "a", limits, images=1)
    limiter.acquire("b", "b", limits, images=1)
    limiter.refused("a", limits, images=1)


def test_concurrent_requests_of_one_key_never_exceed_its_limit(storage_url: str) -> None:
    limits = Limits(requests_per_minute=5, images_per_minute=8)

    async def scenario() -> list[dict[str, str] | BaseException]:
        limiter = RateLimiter(storage_url)
        await limiter.start()
        try:
            return await asyncio.gather(
                *(limiter.acquire("k", "k", limits, images=2) for _ in range(10)),
                return_exceptions=True)
        finally:
            await limiter.stop()

    outcomes = asyncio.run(scenario())
    admitted = [o for o in outcomes if isinstance(o, dict)]
    assert len(admitted) == 4  # 8 images / 2 each, though 5 requests would be allowed
    assert all(isinstance(o, RateLimitError) for o in outcomes if not isinstance(o, dict))
    assert sorted(h["x-ratelimit-remaining-images"] for h in admitted) == ["0", "2", "4", "6"]


# --- the storage ----------------------------------------------------------------------


def test_redis_keys_hold_the_clients_id_under_the_diffuserve_prefix(
    redis_url: str, redis_server: RedisServer,
) -> None:
    limiter = SyncLimiter(redis_url)
    try:
        limiter.acquire("0123456789abcdef", "alice", Limits(requests_per_minute=3,
                                                            images_per_minute=4), images=1)
    finally:
        limiter.close()
    with redis_server.client() as client:
        keys = sorted(key.decode() for key in client.keys("*"))
    assert keys == ["diffuserve:ratelimit/images/0123456789abcdef/4/1/minute",
                    "diffuserve:ratelimit/requests/0123456789abcdef/3/1/minute"]


def _unreachable_url(password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{free_port()}/0"


def test_start_fails_readably_when_redis_does_not_answer() -> None:
    url = _unreachable_url("hunter2-secret")
    limiter = RateLimiter(url)
    with pytest.raises(RateLimitStorageUnavailable) as caught:
        asyncio.run(limiter.start())
    message = str(caught.value)
    assert "hunter2-secret" not in message
    assert "redis://:***@127.0.0.1:" in message
    assert "does not answer" in message and "ConnectionError" in message


def test_a_password_in_the_url_never_reaches_an_error_or_a_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer(tmp_path / "redis", password="right-password")
    server.start()
    try:
        with caplog.at_level(logging.INFO, logger="diffuserve"):
            wrong = server.url().replace("right-password", "wrong-password")
            with pytest.raises(RateLimitStorageUnavailable) as caught:
                asyncio.run(RateLimiter(wrong).start())
            limiter = SyncLimiter(server.url())  # the right one works
            limiter.acquire("k", "k", Limits(requests_per_minute=1), images=1)
            server.stop()
            limiter.refused("k", Limits(requests_per_minute=1), images=1)  # in memory
            limiter.close()
    finally:
        server.stop()
    assert "AuthenticationError" in str(caught.value)
    logged = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert logged.count("redis://:***@127.0.0.1:") == 2  # start-up and outage lines
    assert "rate-limit storage unreachable" in logged
    for secret in ("wrong-password", "right-password"):
        assert secret not in str(caught.value)
        assert secret not in logged


def _outage(redis_server: RedisServer, kind: str) -> None:
    if kind == "stopped":
        redis_server.stop()  # connections refused
    else:
        redis_server.pause()  # connections accepted, nothing answered: the 1 s timeout


def _end_outage(redis_server: RedisServer, kind: str) -> None:
    if kind == "stopped":
        redis_server.start()  # empty: a Redis without persistence lost its counts
    else:
        redis_server.resume()  # with its counts


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_while_redis_does_not_answer_a_key_keeps_its_limit_in_memory(
    own_redis: RedisServer, clock: Clock, caplog: pytest.LogCaptureFixture, outage: str,
) -> None:
    limits = Limits(images_per_minute=12)
    monotonic = Clock()
    limiter = SyncLimiter(own_redis.url(), monotonic=monotonic)
    try:
        with caplog.at_level(logging.INFO, logger="diffuserve.ratelimit"):
            _outage(own_redis, outage)
            admitted = []
            for _ in range(12):
                admitted.append(limiter.charge("k", limits, images=1))
                clock.now += 0.5
            refused = limiter.charge("k", limits, images=1)
            other_key = limiter.charge("other", limits, images=12)
            _end_outage(own_redis, outage)
            # Not asked again before the pause is over, though it answers by now.
            monotonic.now += STORAGE_RETRY_SECONDS - 0.5
            still_in_memory = limiter.charge("k", limits, images=1)
            monotonic.now += 0.6
            back = limiter.charge("k", limits, images=1)
        # Exactly the limit, the request that found Redis down included, then a 429.
        assert [c.refusal for c in admitted] == [None] * 12
        assert [c.headers["x-ratelimit-remaining-images"] for c in admitted] == [
            str(left) for left in range(11, -1, -1)]
        assert all(c.in_memory for c in [*admitted, refused, other_key, still_in_memory])
        assert refused.refusal is not None
        assert refused.refusal.status_code == 429
        # The first image leaves the window 60 s after it was drawn, 6 s ago.
        assert refused.refusal.headers["Retry-After"] == "55"
        assert refused.refusal.headers["x-ratelimit-remaining-images"] == "0"
        assert other_key.refusal is None  # keys are still apart
        assert still_in_memory.refusal is not None
        # Counted in Redis again: its count (nothing of this key) is the one that
        # applies, not memory's full window.
        assert (back.in_memory, back.refusal) == (False, None)
        assert back.headers["x-ratelimit-remaining-images"] == "11"
        with own_redis.client() as client:
            assert client.keys("diffuserve:ratelimit/images/k/*")
        # One warning for the outage, one line when it ends.
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "counted in this process's memory" in warnings[0].getMessage()
        assert [r.getMessage() for r in caplog.records].count(
            "rate-limit storage answers again: limits counted in it again") == 1
    finally:
        limiter.close()


def test_an_outage_does_not_give_a_key_a_fresh_window(
    own_redis: RedisServer, clock: Clock,
) -> None:
    # What this process admitted through Redis is still counted once Redis is gone.
    limits = Limits(requests_per_minute=10, images_per_minute=12)
    limiter = SyncLimiter(own_redis.url(), monotonic=Clock())
    try:
        assert limiter.acquire("k", "k", limits, images=5)[
            "x-ratelimit-remaining-images"] == "7"
        clock.now += 1
        own_redis.stop()
        during = [limiter.charge("k", limits, images=1) for _ in range(8)]
    finally:
        limiter.close()
    assert all(c.in_memory for c in during)
    assert [c.headers.get("x-ratelimit-remaining-images") for c in during[:7]] == [
        str(left) for left in range(6, -1, -1)]
    assert during[7].refusal is not None
    assert during[7].refusal.headers["x-ratelimit-remaining-requests"] == "2"


def test_concurrent_requests_while_redis_hangs_never_exceed_the_limit(
    own_redis: RedisServer,
) -> None:
    limits = Limits(images_per_minute=12)

    async def scenario() -> list[Charge]:
        limiter = RateLimiter(own_redis.url())
        await limiter.start()
        own_redis.pause()
        try:
            return list(await asyncio.gather(
                *(limiter.charge("k", "k", limits, images=1) for _ in range(20))))
        finally:
            own_redis.resume()
            await limiter.stop()

    charges = asyncio.run(scenario())
    assert sum(c.refusal is None for c in charges) == 12
    assert all(c.in_memory for c in charges)

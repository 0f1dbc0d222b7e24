"""Per-key limits on requests and images per minute, with OpenAI's headers.

Each key has two token buckets that refill continuously: ``limit`` tokens a minute, at
most ``limit`` held. A request takes one request token and ``n`` image tokens, or none
if either bucket is short, and then gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from diffuserve.api.errors import RateLimitError

WINDOW_SECONDS = 60.0
#: Past this many buckets, full ones (idle clients) are forgotten: a full bucket and a
#: missing one behave the same, and clients of an open server are unbounded in number.
MAX_BUCKETS = 10_000


def format_reset(seconds: float) -> str:
    """OpenAI's duration format for ``x-ratelimit-reset-*``: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass
class _Bucket:
    limit: int
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.limit / WINDOW_SECONDS
        self.tokens = min(self.limit, self.tokens + (now - self.updated) * rate)
        self.updated = now

    def wait_for(self, cost: int) -> float:
        """Seconds until ``cost`` tokens are there (0 if they are)."""
        missing = cost - self.tokens
        return 0.0 if missing <= 0 else missing * WINDOW_SECONDS / self.limit

    def until_full(self) -> float:
        return (self.limit - self.tokens) * WINDOW_SECONDS / self.limit


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int | None = None
    images_per_minute: int | None = None


class RateLimiter:
    """Token buckets per client key; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, client: str, kind: str, limit: int, now: float) -> _Bucket:
        bucket = self._buckets.get((client, kind))
        if bucket is None or bucket.limit != limit:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = _Bucket(limit, float(limit), now)
            self._buckets[(client, kind)] = bucket
        bucket.refill(now)
        return bucket

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.limit:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, client: str, name: str, limits: Limits, images: int) -> dict[str, str]:
        """Take a request and ``images`` images from ``client``'s buckets.

        Returns the ``x-ratelimit-*`` headers to send; raises :class:`RateLimitError`
        (with the same headers and ``Retry-After``) when a limit is reached.
        """
        wanted = [("requests", limits.requests_per_minute, 1),
                  ("images", limits.images_per_minute, images)]
        active = [(kind, limit, cost) for kind, limit, cost in wanted if limit]
        if not active:
            return {}
        with self._lock:
            now = self._clock()
            buckets = {kind: self._bucket(client, kind, limit, now)
                       for kind, limit, _ in active}
            for kind, limit, cost in active:
                bucket = buckets[kind]
                wait = bucket.wait_for(cost)
                if wait > 0:
                    headers = self._headers(buckets)
                    retry = max(1, math.ceil(wait))
                    headers["Retry-After"] = str(retry)
                    current = limit - math.floor(bucket.tokens) + cost
                    exceeded = "images" if cost > limit else kind
                    hint = (f"A request for {cost} images can never fit a limit of {limit}."
                            if cost > limit else f"Please try again in {retry}s.")
                    raise RateLimitError(
                        f"Rate limit exceeded for {exceeded} per minute for key {name!r}. "
                        f"Limit: {limit}/1min. Current: {current}/1min. {hint}",
                        code="rate_limit_exceeded",
                        headers=headers,
                    )
            for kind, _, cost in active:
                buckets[kind].tokens -= cost
            return self._headers(buckets)

    @staticmethod
    def _headers(buckets: dict[str, _Bucket]) -> dict[str, str]:
        headers = {}
        for kind, bucket in buckets.items():
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.tokens)))
            headers[f"x-ratelimit-reset-{kind}"] = format_reset(bucket.until_full())
        return headers

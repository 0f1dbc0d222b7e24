"""Admission: what every image route does once its request is known to be valid.

Validate, then admit: a request is charged to its key's rate limits and its ``user``
counted in the metrics only after planning accepted it, so an invalid ``n`` never moves
a limit and an over-long ``user`` never becomes a label. Every request, valid or not,
is counted by model and status when it ends.

When the limits' shared storage (Redis) does not answer, the limits still apply: the
limiter counts them in this process's memory, and each such request, admitted or
refused, is counted in ``diffuserve_rate_limit_fallback_total`` (the limiter logs the
outage once, and its end). Each process then counts on its own, so ``N`` processes admit
up to ``N`` times a key's limit between them, never an unlimited number: neither
refusing every request (an outage of the whole service) nor admitting them unchecked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from diffuserve.api.auth import Client
from diffuserve.api.ratelimit import RateLimiter
from diffuserve.metrics import Metrics


@dataclass
class RequestRecord:
    """One request's entry in the metrics, filled in as it goes."""

    model: str = "unknown"
    status: int = 500
    started: float = field(default_factory=time.monotonic)


class Admission:
    """Rate limits and metrics, shared by every image route."""

    def __init__(self, limiter: RateLimiter, metrics: Metrics) -> None:
        self.limiter = limiter
        self.metrics = metrics

    async def start(self) -> None:
        await self.limiter.start()

    async def stop(self) -> None:
        await self.limiter.stop()

    async def admit(self, client: Client, *, images: int, user: str | None) -> dict[str, str]:
        """Charge a valid request; returns the ``x-ratelimit-*`` headers to send, or
        raises the 429 of the limit it hit."""
        self.metrics.count_user(user)
        charge = await self.limiter.charge(client.id, client.name, client.limits,
                                           images=images)
        if charge.in_memory:
            self.metrics.rate_limit_fallback.inc()
        if charge.refusal is not None:
            self.metrics.rate_limited.inc()
            raise charge.refusal
        return charge.headers

    def finish(self, record: RequestRecord) -> None:
        self.metrics.requests.labels(record.model, str(record.status)).inc()
        self.metrics.request_seconds.labels(record.model).observe(
            time.monotonic() - record.started)

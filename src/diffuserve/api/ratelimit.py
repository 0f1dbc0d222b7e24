"""Per-key limits on requests and images per minute, with OpenAI's headers.

Counted by the ``limits`` library with its **moving window**, in this process
(``memory://``) or in Redis (``redis://HOST:PORT/DB``), where every replica shares the
counts and they outlive a restart. The moving window keeps each use's time, so a limit of
``L`` a minute means what it says: never more than ``L`` in any 60 seconds. It is the one
strategy that behaves the same on both storages (a list of timestamps in each; the
sliding-window counter aligns its windows to the clock in memory but to the first use in
Redis, and only approximates, which shows at the small limits an image server sets). It
costs one timestamp per use still in the window, at most ``limit`` per key.

A request is charged one request and ``n`` images. Both limits are tested before either
is hit, so a refused request takes nothing; in this process a lock per key makes test
and hit one step. Between replicas, two requests can pass the test for a key's last
units at once: the storage's hit is atomic, so the loser is refused (429) and never more
than the limit is admitted, but if it lost on its second limit the unit it took from
the first stays counted (the images are hit first, being the likelier to run out).

Headers: ``x-ratelimit-remaining-*`` after this request, ``x-ratelimit-reset-*`` the
time until the oldest use counted leaves the window, when ``remaining`` next grows (a
minute after the first use of an idle key). OpenAI words it as the time until the limit
is back to its initial state; under a moving window that is always a minute after the
newest use, 60 s on every admitted request, which would tell a client nothing. A 429's
``Retry-After`` is the wait, in whole seconds, until this request would fit (never less
than 1); a request larger than its key's image limit can never fit and also gets
``x-should-retry: false``.

If the storage stops answering, requests are admitted unchecked (fail open: a rate
limit must not take the service down with it): the caller counts them, the first
failure is logged as a warning, and the storage is tried again after
:data:`STORAGE_RETRY_SECONDS` rather than on every request (a storage that stopped
answering would otherwise add its timeout to each of them).

Keys in the storage are ``diffuserve:ratelimit/<requests|images>/<client id>/<limit>/…``:
the client id is a digest of the API key (see :mod:`diffuserve.api.auth`), never the key.
A key whose limit changes starts a fresh window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, MovingWindowSupport, Storage
from limits.aio.storage.redis import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from diffuserve.api.errors import RateLimitError
from diffuserve.config import check_rate_limit_storage, mask_url, url_secrets

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("diffuserve.ratelimit")

WINDOW_SECONDS = 60
KEY_PREFIX = "diffuserve"
NAMESPACE = "ratelimit"
#: Connecting to and each answer from the storage: a storage slower than this is
#: treated as down rather than holding requests up.
STORAGE_TIMEOUT_SECONDS = 1.0
#: After a failure, requests go unchecked this long before the storage is tried again.
STORAGE_RETRY_SECONDS = 5.0


def format_reset(seconds: float) -> str:
    """OpenAI's duration format for ``x-ratelimit-reset-*``: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class Limits:
    """A key's limits a minute; ``None``: no limit."""

    requests_per_minute: int | None = None
    images_per_minute: int | None = None


class RateLimitStorageUnavailable(Exception):
    """The storage of the limits did not answer (its URL in the message is masked)."""


@dataclass(frozen=True)
class _Window:
    """One limit of one key as the storage holds it, and what this request would take."""

    kind: str  # "requests" or "images"
    item: RateLimitItem
    key: str
    cost: int
    used: int  # uses counted in the last minute
    oldest: float  # time of the oldest of them (now, if none)

    @property
    def limit(self) -> int:
        return self.item.amount

    @property
    def fits(self) -> bool:
        return self.used + self.cost <= self.limit

    def headers(self, now: float, *, charged: bool) -> dict[str, str]:
        used = self.used + (self.cost if charged else 0)
        # With nothing counted before, this request's own use is the oldest.
        oldest = self.oldest if self.used else now
        reset = oldest + WINDOW_SECONDS - now if used else 0.0
        return {
            f"x-ratelimit-limit-{self.kind}": str(self.limit),
            f"x-ratelimit-remaining-{self.kind}": str(max(0, self.limit - used)),
            f"x-ratelimit-reset-{self.kind}": format_reset(reset),
        }


def _limits_url(url: str) -> str:
    """Our storage URL as ``limits`` names its asyncio storages: ``async+redis://…``."""
    check_rate_limit_storage(url)
    return f"async+{url}"


class RateLimiter:
    """Moving-window limits per client key, in the storage that ``storage_url`` names.

    :meth:`start` connects (and raises :class:`RateLimitStorageUnavailable`, readable and
    without the password, if the storage does not answer); :meth:`acquire` charges a
    request; :meth:`stop` closes the connections.
    """

    def __init__(self, storage_url: str = "memory://", *,
                 retry_seconds: float = STORAGE_RETRY_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.storage_url = storage_url
        self._retry_seconds = retry_seconds
        self._monotonic = monotonic
        self._limits_url = _limits_url(storage_url)
        self._storage: Storage | None = None
        self._strategy: MovingWindowRateLimiter | None = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        # One lock per key in use: test and hit are one step within this process.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._retry_at: float | None = None  # set while the storage is taken as down

    @property
    def shown_url(self) -> str:
        return mask_url(self.storage_url)

    async def start(self) -> None:
        # Built here, on the serving loop: an asyncio Redis client belongs to one loop.
        options: dict[str, Any] = {}
        if not self.storage_url.startswith("memory:"):
            options = {"implementation": "redispy", "key_prefix": KEY_PREFIX,
                       "socket_timeout": STORAGE_TIMEOUT_SECONDS,
                       "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS}
        try:
            storage = storage_from_string(self._limits_url, **options)
        except ConfigurationError as exc:  # a driver missing: pip install diffuserve[redis]
            raise RateLimitStorageUnavailable(
                f"the rate-limit storage {self.shown_url} cannot be used "
                f"({self._describe(exc)})") from None
        assert isinstance(storage, Storage) and isinstance(storage, MovingWindowSupport)
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(storage)
        base = storage.base_exceptions
        self._errors = (OSError, *(base if isinstance(base, tuple) else (base,)))
        if isinstance(storage, MemoryStorage):
            return
        try:
            # A real read: address, password, database and the scripts all checked.
            probe = RateLimitItemPerMinute(1, namespace=NAMESPACE)
            await storage.get_moving_window(probe.key_for("start"), 1, WINDOW_SECONDS)
        except self._errors as exc:
            await self.stop()
            raise RateLimitStorageUnavailable(
                f"the rate-limit storage {self.shown_url} does not answer "
                f"({self._describe(exc)}); start Redis, correct "
                "--rate-limit-storage, or use memory:// for limits kept by this process "
                "alone") from None
        logger.info("rate limits counted in shared storage",
                    extra={"fields": {"rate_limit_storage": self.shown_url}})

    async def stop(self) -> None:
        storage, self._storage, self._strategy = self._storage, None, None
        if isinstance(storage, RedisStorage) and isinstance(storage.bridge, RedispyBridge):
            # limits has no close(): close the clients of its bridge (a Sentinel setup
            # has a second one for the replicas).
            for readonly in (False, True):
                with contextlib.suppress(Exception):  # already broken: nothing to close
                    await cast("Redis", storage.bridge.get_connection(readonly)).aclose()

    async def acquire(self, client: str, name: str, limits: Limits,
                      images: int) -> dict[str, str]:
        """Charge a request and ``images`` images to ``client``'s limits.

        Returns the ``x-ratelimit-*`` headers to send; raises :class:`RateLimitError`
        (with the same headers and ``Retry-After``) when a limit is reached, having taken
        nothing, or :class:`RateLimitStorageUnavailable` when the storage is down.
        """
        wanted = [("requests", limits.requests_per_minute, 1),
                  ("images", limits.images_per_minute, images)]
        active = [(kind, limit, cost) for kind, limit, cost in wanted if limit]
        if not active:
            return {}
        if self._strategy is None:
            raise RuntimeError("RateLimiter.start() was not awaited")
        if self._retry_at is not None and self._monotonic() < self._retry_at:
            raise RateLimitStorageUnavailable(f"{self.shown_url} is down")
        try:
            outcome = await self._charge(client, name, active)
        except self._errors as exc:
            self._storage_failed(exc)
            raise RateLimitStorageUnavailable(f"{self.shown_url} is down") from None
        self._storage_answered()
        if isinstance(outcome, RateLimitError):
            raise outcome
        return outcome

    async def _charge(self, client: str, name: str,
                      active: list[tuple[str, int, int]]) -> dict[str, str] | RateLimitError:
        """The headers of a charged request, or the 429 of a refused one."""
        strategy = self._strategy
        assert strategy is not None
        lock = self._locks.get(client)
        if lock is None:
            lock = self._locks[client] = asyncio.Lock()
        async with lock:
            windows = [await self._read(kind, limit, cost, client)
                       for kind, limit, cost in active]
            if not all(window.fits for window in windows):
                return await self._refusal(name, windows)
            # Images first: they are the likelier to be short when another replica got
            # there between the test and the hit.
            for window in sorted(windows, key=lambda w: w.kind != "images"):
                if not await strategy.hit(window.item, window.kind, client,
                                          cost=window.cost):
                    fresh = [await self._read(w.kind, w.limit, w.cost, client)
                             for w in windows]
                    return await self._refusal(name, fresh, lost=window.kind)
        now = time.time()
        headers: dict[str, str] = {}
        for window in windows:
            headers.update(window.headers(now, charged=True))
        return headers

    async def _read(self, kind: str, limit: int, cost: int, client: str) -> _Window:
        item = RateLimitItemPerMinute(limit, namespace=NAMESPACE)
        key = item.key_for(kind, client)
        oldest, used = await self._moving_window(key, limit, WINDOW_SECONDS)
        return _Window(kind, item, key, cost, used, oldest)

    async def _moving_window(self, key: str, limit: int, seconds: int) -> tuple[float, int]:
        """(time of the oldest use, uses) within the last ``seconds`` seconds."""
        storage = self._storage
        assert isinstance(storage, MovingWindowSupport)
        return await storage.get_moving_window(key, limit, seconds)

    async def _seconds_until_fits(self, window: _Window, now: float) -> int:
        """Whole seconds until ``window`` has room for its cost, if nobody else uses it."""
        if window.fits:
            return 1
        # Strictly after the oldest use's minute: at its very end it still counts.
        first = max(1, math.floor(window.oldest + WINDOW_SECONDS - now) + 1)
        if window.used + window.cost - window.limit == 1:
            return first  # only the oldest use has to leave
        # Several uses must leave: in s seconds the window holds the uses of the last
        # 60 - s seconds, so find the smallest s where those leave room.
        low, high = first, WINDOW_SECONDS
        while low < high:
            middle = (low + high) // 2
            _, used = await self._moving_window(window.key, window.limit,
                                                WINDOW_SECONDS - middle)
            if used + window.cost <= window.limit:
                high = middle
            else:
                low = middle + 1
        return low

    async def _refusal(self, name: str, windows: list[_Window],
                       lost: str | None = None) -> RateLimitError:
        now = time.time()
        refused = [w for w in windows if not w.fits] or [w for w in windows if w.kind == lost]
        never = [w for w in refused if w.cost > w.limit]
        if never:
            retry = WINDOW_SECONDS
        else:
            retry = max([await self._seconds_until_fits(w, now) for w in refused])
        first = (never or refused)[0]
        headers: dict[str, str] = {}
        for window in windows:
            headers.update(window.headers(now, charged=False))
        headers["Retry-After"] = str(retry)
        if never:
            # The SDK would otherwise send it again after Retry-After, to the same end.
            headers["x-should-retry"] = "false"
            hint = f"A request for {first.cost} images can never fit a limit of {first.limit}."
        else:
            hint = f"Please try again in {retry}s."
        return RateLimitError(
            f"Rate limit exceeded for {first.kind} per minute for key {name!r}. "
            f"Limit: {first.limit}/1min. Current: {first.used + first.cost}/1min. {hint}",
            code="rate_limit_exceeded",
            headers=headers,
        )

    def _describe(self, exc: BaseException) -> str:
        """The error, without the URL's password should a driver ever quote it."""
        text = f"{type(exc).__name__}: {exc}"
        for secret in url_secrets(self.storage_url):
            text = text.replace(secret, "***")
        return text

    def _storage_failed(self, exc: BaseException) -> None:
        if self._retry_at is None:
            logger.warning(
                "rate-limit storage unreachable: admitting requests without limits until "
                "it answers again",
                extra={"fields": {"rate_limit_storage": self.shown_url,
                                  "error": self._describe(exc)}})
        self._retry_at = self._monotonic() + self._retry_seconds

    def _storage_answered(self) -> None:
        if self._retry_at is not None:
            self._retry_at = None
            logger.info("rate-limit storage answers again: limits apply",
                        extra={"fields": {"rate_limit_storage": self.shown_url}})


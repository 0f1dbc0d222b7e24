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

If Redis stops answering (a refused connection, or no answer within
:data:`STORAGE_TIMEOUT_SECONDS`), the limits still apply: each process counts them in its
own memory (``limits``' ``MemoryStorage``, the same moving window, keys, headers and
429s), the request that finds Redis down included. An outage never lifts a key's limit,
but while it lasts each process counts **on its own**: ``N`` processes admit up to ``N``
times a key's limit between them, never an unlimited number. So that an outage does not
hand a key a fresh window, each process also copies into memory every use it admits
while Redis answers: a key that has just spent its minute through a process gets
nothing more from it in memory until those uses leave the window. The first failure is
logged as a warning (once per outage). Redis is asked again after
:data:`STORAGE_RETRY_SECONDS`, by one request while the others go on in memory (a hung
Redis would otherwise add its timeout to each of them); once it answers, the counts are
Redis's again (it does not learn of the uses counted in memory meanwhile, so in the
minute after an outage a key may get its limit once more), and one info line says so.

Keys in the storage are ``diffuserve:ratelimit/<requests|images>/<client id>/<limit>/…``
(in memory, the same without ``diffuserve:``): the client id is a digest of the API key
(see :mod:`diffuserve.api.auth`), never the key. A key whose limit changes starts a fresh
window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
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
from diffuserve.config.limits import Limits as Limits  # a key's limits, as configured
from diffuserve.config.limits import check_rate_limit_storage
from diffuserve.config.urls import mask_url, url_secrets

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("diffuserve.ratelimit")

WINDOW_SECONDS = 60
KEY_PREFIX = "diffuserve"
NAMESPACE = "ratelimit"
#: Connecting to and each answer from the storage: a storage slower than this is
#: treated as down rather than holding requests up.
STORAGE_TIMEOUT_SECONDS = 1.0
#: After a failure, limits are counted in memory this long before the storage is asked
#: again.
STORAGE_RETRY_SECONDS = 5.0

#: (kind, limit, cost) of each limit a request is charged to.
_Wanted = list[tuple[str, int, int]]


def format_reset(seconds: float) -> str:
    """OpenAI's duration format for ``x-ratelimit-reset-*``: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class Charge:
    """What charging one request came to: the ``x-ratelimit-*`` headers of an admitted
    request, or the 429 that refused it (with its own headers)."""

    headers: dict[str, str]
    refusal: RateLimitError | None = None
    #: Counted in this process's memory because the shared storage did not answer.
    in_memory: bool = False


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


class _Counter:
    """The moving windows of every key in one storage: test, hit, and what a 429 says.

    Not safe for two requests of one key at once: the caller holds the key's lock.
    """

    def __init__(self, storage: Storage) -> None:
        assert isinstance(storage, MovingWindowSupport)
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)

    async def charge(self, client: str, name: str,
                     wanted: _Wanted) -> dict[str, str] | RateLimitError:
        """The headers of a charged request, or the 429 of a refused one."""
        windows = [await self._read(kind, limit, cost, client) for kind, limit, cost in wanted]
        if not all(window.fits for window in windows):
            return await self._refusal(name, windows)
        # Images first: they are the likelier to be short when another replica got
        # there between the test and the hit.
        for window in sorted(windows, key=lambda w: w.kind != "images"):
            if not await self.strategy.hit(window.item, window.kind, client,
                                           cost=window.cost):
                fresh = [await self._read(w.kind, w.limit, w.cost, client) for w in windows]
                return await self._refusal(name, fresh, lost=window.kind)
        now = time.time()
        headers: dict[str, str] = {}
        for window in windows:
            headers.update(window.headers(now, charged=True))
        return headers

    async def record(self, client: str, wanted: _Wanted) -> None:
        """Count uses admitted elsewhere, whether or not they fit here.

        The copy keeps this process's every use of the last minute, even beyond the
        limit (after an outage Redis may admit what memory already counted): at most a
        few times the limit per key, as only admitted uses are recorded.
        """
        for kind, limit, cost in wanted:
            item = RateLimitItemPerMinute(limit, namespace=NAMESPACE)
            await self.storage.acquire_entry(item.key_for(kind, client), sys.maxsize,
                                             item.get_expiry(), amount=cost)

    async def _read(self, kind: str, limit: int, cost: int, client: str) -> _Window:
        item = RateLimitItemPerMinute(limit, namespace=NAMESPACE)
        key = item.key_for(kind, client)
        oldest, used = await self.storage.get_moving_window(key, limit, WINDOW_SECONDS)
        return _Window(kind, item, key, cost, used, oldest)

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
            _, used = await self.storage.get_moving_window(window.key, window.limit,
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


class RateLimiter:
    """Moving-window limits per client key, in the storage that ``storage_url`` names.

    :meth:`start` connects (and raises :class:`RateLimitStorageUnavailable`, readable and
    without the password, if the storage does not answer); :meth:`charge` charges a
    request (:meth:`acquire`: the same, raising its 429); :meth:`stop` closes the
    connections. A shared storage that stops answering later is stood in for by memory.
    """

    def __init__(self, storage_url: str = "memory://", *,
                 retry_seconds: float = STORAGE_RETRY_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.storage_url = storage_url
        self._retry_seconds = retry_seconds
        self._monotonic = monotonic
        self._limits_url = _limits_url(storage_url)
        self._storage: Storage | None = None
        self._counter: _Counter | None = None
        # Memory that stands in for a shared storage while it does not answer.
        self._fallback: _Counter | None = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        # One lock per key in use: test and hit are one step within this process.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._down_since: float | None = None  # set while the storage is taken as down
        self._retry_at = 0.0  # while down: when the storage is asked again

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
        self._counter = _Counter(storage)
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
        self._fallback = _Counter(MemoryStorage())
        logger.info("rate limits counted in shared storage",
                    extra={"fields": {"rate_limit_storage": self.shown_url}})

    async def stop(self) -> None:
        storage, self._storage, self._counter, self._fallback = self._storage, None, None, None
        if isinstance(storage, RedisStorage) and isinstance(storage.bridge, RedispyBridge):
            # limits has no close(): close the clients of its bridge (a Sentinel setup
            # has a second one for the replicas).
            for readonly in (False, True):
                with contextlib.suppress(Exception):  # already broken: nothing to close
                    await cast("Redis", storage.bridge.get_connection(readonly)).aclose()

    async def acquire(self, client: str, name: str, limits: Limits,
                      images: int) -> dict[str, str]:
        """:meth:`charge`, raising its 429: the ``x-ratelimit-*`` headers to send."""
        charge = await self.charge(client, name, limits, images)
        if charge.refusal is not None:
            raise charge.refusal
        return charge.headers

    async def charge(self, client: str, name: str, limits: Limits, images: int) -> Charge:
        """Charge a request and ``images`` images to ``client``'s limits.

        A refused request (its :class:`RateLimitError` carries the same headers and
        ``Retry-After``) has taken nothing. While the shared storage does not answer,
        the limits are counted in this process's memory (``in_memory``).
        """
        wanted = [("requests", limits.requests_per_minute, 1),
                  ("images", limits.images_per_minute, images)]
        active = [(kind, limit, cost) for kind, limit, cost in wanted if limit]
        if not active:
            return Charge({})
        counter, fallback = self._counter, self._fallback
        if counter is None:
            raise RuntimeError("RateLimiter.start() was not awaited")
        lock = self._locks.get(client)
        if lock is None:
            lock = self._locks[client] = asyncio.Lock()
        async with lock:
            if fallback is None:  # memory:// — nothing to fail
                return self._outcome(await counter.charge(client, name, active), False)
            if self._ask_storage():
                try:
                    outcome = await counter.charge(client, name, active)
                except self._errors as exc:
                    self._storage_failed(exc)
                else:
                    self._storage_answered()
                    if not isinstance(outcome, RateLimitError):
                        # So that an outage does not start this process from an empty
                        # window.
                        await fallback.record(client, active)
                    return self._outcome(outcome, False)
            # The storage is down, this request's own try included: never unchecked.
            return self._outcome(await fallback.charge(client, name, active), True)

    @staticmethod
    def _outcome(outcome: dict[str, str] | RateLimitError, in_memory: bool) -> Charge:
        if isinstance(outcome, RateLimitError):
            return Charge({}, outcome, in_memory)
        return Charge(outcome, None, in_memory)

    def _describe(self, exc: BaseException) -> str:
        """The error, without the URL's password should a driver ever quote it."""
        text = f"{type(exc).__name__}: {exc}"
        for secret in url_secrets(self.storage_url):
            text = text.replace(secret, "***")
        return text

    def _ask_storage(self) -> bool:
        """Whether this request tries the shared storage: always while it answers; once
        it is down, one request per :data:`STORAGE_RETRY_SECONDS`, the others going on
        in memory rather than each waiting out the timeout of a hung storage."""
        if self._down_since is None:
            return True
        now = self._monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._retry_seconds
        return True

    def _storage_failed(self, exc: BaseException) -> None:
        now = self._monotonic()
        if self._down_since is None:
            self._down_since = now
            logger.warning(
                "rate-limit storage unreachable: limits counted in this process's memory "
                "until it answers again (each process counts alone meanwhile)",
                extra={"fields": {"rate_limit_storage": self.shown_url,
                                  "error": self._describe(exc)}})
        self._retry_at = now + self._retry_seconds

    def _storage_answered(self) -> None:
        if self._down_since is not None:
            seconds = self._monotonic() - self._down_since
            self._down_since = None
            logger.info("rate-limit storage answers again: limits counted in it again",
                        extra={"fields": {"rate_limit_storage": self.shown_url,
                                          "outage_seconds": round(seconds, 1)}})

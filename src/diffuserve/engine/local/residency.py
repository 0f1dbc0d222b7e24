"""Which models are in memory: loaded on demand, the least recently used idle one
unloaded to make room, idle ones unloaded after a while, and an admin's load and unload.

A request for a model that is not loaded waits for its load (within its own deadline);
the load first makes room under ``max_loaded_models`` and ``device_memory_budget`` by
unloading the least recently used models that nobody is using (a model in use is never
unloaded under its requests; the load waits for one to become idle). Loads and unloads
run on threads of their own, one at a time per model, and go on if the request that
started them leaves. Models loading when the server starts answer
:class:`~diffuserve.engine.errors.ModelNotLoaded` (503, retry) until that load is done,
as they always have; every load after it is waited for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.errors import (
    DeadlineExceeded,
    ModelLoadFailed,
    ModelNotLoaded,
    ResidencyRefused,
)
from diffuserve.engine.image_memory import return_free_memory
from diffuserve.metrics import Metrics

logger = logging.getLogger("diffuserve.engine")

T = TypeVar("T")

#: Why a model was unloaded (the ``reason`` label of the unload counter).
UnloadReason = Literal["lru", "idle", "budget", "admin"]
#: The idle sweep runs this often at most, and at least this often when a model has
#: ``idle_unload_seconds``.
MIN_SWEEP_SECONDS = 0.25
MAX_SWEEP_SECONDS = 30.0

#: Called before a model is unloaded, on the event loop: its scheduler is stopped.
BeforeUnload = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class Resident:
    """One model's place in memory."""

    name: str
    backend: Backend
    idle_unload_seconds: float | None
    #: Loading when the server starts, not done yet: requests are told to retry.
    at_start: bool = False
    #: A load or unload under way (one at a time), and which.
    change: asyncio.Future[None] | None = None
    changing: Literal["load", "unload"] | None = None
    #: Requests holding the model (queued or being drawn).
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    #: The weights' bytes when last loaded (an estimate for its next load).
    weight_bytes: int | None = None
    #: Times it was unloaded.
    unloads: int = 0

    @property
    def starting(self) -> bool:
        """Its load at the server's start is not done yet."""
        return self.at_start and not self.backend.loaded

    @property
    def occupies(self) -> bool:
        """Loaded, or about to be: it counts against ``max_loaded_models``."""
        return self.backend.loaded or self.starting or self.changing == "load"

    @property
    def idle(self) -> bool:
        return self.backend.loaded and self.users == 0 and self.change is None


class Residency:
    """The models of one engine in memory: what is loaded, and what is used when."""

    def __init__(self, specs: Sequence[ModelSpec], backends: Mapping[str, Backend], *,
                 metrics: Metrics, max_loaded: int = 0,
                 memory_budget_bytes: int | None = None,
                 at_start: Sequence[str] = (), before_unload: BeforeUnload) -> None:
        self._residents = {
            spec.name: Resident(spec.name, backends[spec.name], spec.idle_unload_seconds,
                                at_start=spec.name in at_start)
            for spec in specs}
        self.metrics = metrics
        self.max_loaded = max_loaded
        self.memory_budget_bytes = memory_budget_bytes
        self._before_unload = before_unload
        #: Set whenever a model is released or unloaded: a load waiting for room looks
        #: again.
        self._freed = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    # -- what requests do --------------------------------------------------------------

    @asynccontextmanager
    async def using(self, name: str, deadline: float,
                    timeout_seconds: float = math.inf) -> AsyncIterator[None]:
        """Hold model ``name`` loaded for the block, loading it first if needed; the wait
        ends at ``deadline`` (monotonic; the request's ``timeout_seconds`` after it
        came) with :class:`~diffuserve.engine.errors.DeadlineExceeded`."""
        resident = self._residents[name]
        try:
            await self._until_loaded(resident, deadline)
        except TimeoutError:
            raise DeadlineExceeded(started=False, timeout_seconds=round(timeout_seconds, 3),
                                   retry_after=5) from None
        resident.users += 1
        resident.last_used = time.monotonic()
        try:
            yield
        finally:
            resident.users -= 1
            resident.last_used = time.monotonic()
            self._freed.set()

    async def _until_loaded(self, resident: Resident, deadline: float) -> None:
        while True:
            if resident.change is not None:
                await _within(resident.change, deadline)
                continue
            if resident.backend.loaded:
                return
            if resident.starting:
                raise ModelNotLoaded(resident.name)
            self._begin(resident, "load", self._load(resident))

    def unloaded(self, name: str) -> bool:
        """``name`` has been unloaded at least once (so what it reported when loaded is
        known)."""
        return self._residents[name].unloads > 0

    def ready(self) -> bool:
        """Every model meant to load at start has (whatever happened to it since)."""
        return not any(resident.starting for resident in self._residents.values())

    # -- what an admin does ------------------------------------------------------------

    async def load(self, name: str) -> None:
        """Load ``name`` now (making room as a request would) and return once it is
        loaded; nothing if it is."""
        resident = self._residents[name]
        await self._until_loaded(resident, math.inf)
        resident.last_used = time.monotonic()

    async def unload(self, name: str) -> None:
        """Unload ``name`` once the requests holding it are done (new ones wait, then
        load it again); nothing if it is not loaded."""
        resident = self._residents[name]
        if not resident.backend.unloads:
            raise ResidencyRefused(name, "its backend cannot unload its weights")
        while resident.change is not None:
            await _within(resident.change, math.inf)
        if resident.backend.loaded:
            await self._begin(resident, "unload", self._drain_then_unload(resident))

    async def _drain_then_unload(self, resident: Resident) -> None:
        while resident.users:
            self._freed.clear()
            await self._freed.wait()
        await self._unload(resident, "admin")

    # -- loads and unloads -------------------------------------------------------------

    def _begin(self, resident: Resident, kind: Literal["load", "unload"],
               work: Awaitable[None]) -> asyncio.Future[None]:
        """Run ``work`` as the model's one change; what waits for it sees it end."""
        loop = asyncio.get_running_loop()
        change: asyncio.Future[None] = loop.create_future()
        resident.change, resident.changing = change, kind

        async def run() -> None:
            try:
                await work
            except BaseException as exc:
                if not change.done():
                    change.set_exception(exc)
                    change.exception()  # retrieved: the waiters, if any, raise it too
                if not isinstance(exc, Exception):
                    raise
            else:
                if not change.done():
                    change.set_result(None)
            finally:
                resident.change = resident.changing = None
                self._freed.set()

        # Not the request's task: a load goes on when the request that started it leaves.
        asyncio.ensure_future(run())
        return change

    async def _load(self, resident: Resident) -> None:
        await self._make_room(resident)
        started = time.monotonic()
        try:
            await _on_thread(resident.backend.load, f"diffuserve-load-{resident.name}")
        except ModelLoadFailed as exc:
            logger.error("model load failed", extra={"fields": {
                "model": resident.name, "error": str(exc)}})
            raise
        except Exception as exc:
            logger.exception("model load failed", extra={"fields": {"model": resident.name}})
            raise ModelLoadFailed(f"Could not load model {resident.name!r}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        seconds = time.monotonic() - started
        resident.last_used = time.monotonic()
        resident.weight_bytes = resident.backend.weight_bytes
        self.metrics.model_loads.labels(resident.name).inc()
        self.metrics.model_load_seconds.labels(resident.name).observe(seconds)
        logger.info("model loaded on demand", extra={"fields": {
            "model": resident.name, "load_seconds": round(seconds, 2),
            "weight_bytes": resident.weight_bytes}})
        await self._within_budget(resident)

    async def _make_room(self, resident: Resident) -> None:
        """Unload the least recently used idle models until ``resident`` fits; wait for
        one to become idle where none is."""
        while True:
            others = [other for other in self._residents.values() if other is not resident]
            over_count = bool(self.max_loaded) and \
                sum(other.occupies for other in others) >= self.max_loaded
            over_budget = self.memory_budget_bytes is not None and any(
                other.backend.loaded for other in others) and \
                self._bytes(others) + (resident.weight_bytes or 0) > self.memory_budget_bytes
            if not over_count and not over_budget:
                return
            victim = self._least_recently_used(others)
            if victim is None:
                if not any(other.backend.unloads and other.occupies for other in others):
                    # Nothing loaded could ever make room: say so rather than wait.
                    limit = (f"--max-loaded-models {self.max_loaded}" if over_count
                             else "--device-memory-budget")
                    raise ModelLoadFailed(
                        f"Could not load model {resident.name!r}: {limit} is reached and "
                        "no loaded model can be unloaded (their backends cannot).")
                self._freed.clear()
                await self._freed.wait()
                continue
            await self._begin(victim, "unload",
                              self._unload(victim, "lru" if over_count else "budget"))

    async def _within_budget(self, loaded: Resident) -> None:
        """After a load whose size was not known: unload others while over budget."""
        budget = self.memory_budget_bytes
        if budget is None:
            return
        while self._bytes(self._residents.values()) > budget:
            victim = self._least_recently_used(
                [other for other in self._residents.values() if other is not loaded])
            if victim is None:
                logger.warning("over the device memory budget", extra={"fields": {
                    "budget_bytes": budget,
                    "weight_bytes": self._bytes(self._residents.values()),
                    "why": "every other loaded model is in use"}})
                return
            await self._begin(victim, "unload", self._unload(victim, "budget"))

    def _least_recently_used(self, candidates: Sequence[Resident]) -> Resident | None:
        idle = [resident for resident in candidates
                if resident.idle and resident.backend.unloads]
        return min(idle, key=lambda resident: resident.last_used, default=None)

    @staticmethod
    def _bytes(residents: Iterable[Resident]) -> int:
        return sum(resident.backend.weight_bytes or 0 for resident in residents
                   if resident.backend.loaded)

    async def _unload(self, resident: Resident, reason: UnloadReason) -> None:
        held = resident.weight_bytes = resident.backend.weight_bytes
        await self._before_unload(resident.name)
        await _on_thread(resident.backend.unload, f"diffuserve-unload-{resident.name}")
        resident.at_start = False  # loaded again on demand from now on
        resident.unloads += 1
        await _on_thread(return_free_memory, "diffuserve-trim")
        self.metrics.model_unloads.labels(resident.name, reason).inc()
        logger.info("model unloaded", extra={"fields": {
            "model": resident.name, "reason": reason, "weight_bytes": held}})

    # -- idle models -------------------------------------------------------------------

    def start(self) -> None:
        """Begin unloading models idle for longer than their ``idle_unload_seconds``."""
        timers = [resident.idle_unload_seconds for resident in self._residents.values()
                  if resident.idle_unload_seconds is not None]
        if timers and self._sweeper is None:
            every = min(MAX_SWEEP_SECONDS, max(MIN_SWEEP_SECONDS, min(timers) / 4))
            self._sweeper = asyncio.create_task(self._sweep(every), name="idle-unload")

    async def _sweep(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for resident in self._residents.values():
                limit = resident.idle_unload_seconds
                if limit is not None and resident.idle and resident.backend.unloads \
                        and now - resident.last_used >= limit:
                    try:
                        await self._begin(resident, "unload", self._unload(resident, "idle"))
                    except Exception:
                        logger.exception("idle unload failed",
                                         extra={"fields": {"model": resident.name}})

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None


async def _within(change: asyncio.Future[None], deadline: float) -> None:
    """Wait for a load or unload to end, until ``deadline`` (monotonic:
    :class:`TimeoutError` then); a failed load raises its error. Cancelling the waiter
    never cancels the change."""
    remaining = deadline - time.monotonic()
    await asyncio.wait_for(asyncio.shield(change),
                           None if math.isinf(remaining) else max(0.0, remaining))


def _on_thread(work: Callable[[], T], name: str) -> asyncio.Future[T]:
    """``work()`` on a daemon thread of its own: a stop during a long download does not
    wait for it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            value = work()
        except BaseException as exc:  # handed to the loop, raised there
            error = exc
            outcome = lambda: future.set_exception(error)  # noqa: E731
        else:
            outcome = lambda: future.set_result(value)  # noqa: E731
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future

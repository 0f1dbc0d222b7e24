"""LocalEngine: the in-process :class:`~diffuserve.engine.client.EngineClient`.

It holds one backend per configured model, loads them in the background, and gives each
model a :class:`~diffuserve.engine.local.scheduler.ModelScheduler` (made when the model
first serves, when its device is known) sharing one
:class:`~diffuserve.engine.local.device.DeviceSlot` per device.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from diffuserve.config import ModelSpec, Settings
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.client import EngineClient
from diffuserve.engine.errors import (
    DeadlineExceeded,
    Draining,
    ModelLoadFailed,
    PromptTooLong,
    TooManyImages,
    UnknownModel,
    UnsupportedTask,
)
from diffuserve.engine.image_memory import keep_image_memory
from diffuserve.engine.local.device import DeviceSlot
from diffuserve.engine.local.residency import Residency
from diffuserve.engine.local.scheduler import Job, ModelScheduler
from diffuserve.engine.plugins import BackendFactory, create_backends
from diffuserve.engine.types import (
    TRANSPARENT_BACKGROUND,
    Accepted,
    ModelStatus,
    Progress,
    Result,
    Task,
    TaskEvent,
    TaskKind,
)
from diffuserve.metrics import Metrics

logger = logging.getLogger("diffuserve.engine")

#: Prompts up to this long are counted on the event loop (at most 0.2 ms).
INLINE_COUNT_CHARS = 500

#: Bytes in one GB of ``--device-memory-budget``.
GIB = 2**30

#: Called with a one-paragraph message when a model cannot be loaded.
LoadFailureHandler = Callable[[str], None]


class LocalEngine(EngineClient):
    """Backends, queues and device workers in this process."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        backends: Mapping[str, Backend],
        *,
        metrics: Metrics | None = None,
        max_queue: int = 64,
        batching: bool = True,
        on_load_failure: LoadFailureHandler | None = None,
        max_loaded_models: int = 0,
        memory_budget_bytes: int | None = None,
        at_start: Sequence[str] | None = None,
    ) -> None:
        self._specs = {spec.name: spec for spec in specs}
        missing = set(self._specs) - set(backends)
        if missing:
            raise ValueError(f"no backend for models {sorted(missing)}")
        self._backends = dict(backends)
        self.metrics = metrics or Metrics()
        #: The models loaded when the engine starts (all of them unless told).
        self.at_start = tuple(self._specs) if at_start is None else tuple(at_start)
        self._residency = Residency(
            specs, self._backends, metrics=self.metrics, max_loaded=max_loaded_models,
            memory_budget_bytes=memory_budget_bytes, at_start=self.at_start,
            before_unload=self._drop_scheduler)
        self.max_queue = max_queue
        self.batching = batching
        self.on_load_failure = on_load_failure
        self._slots: dict[str, DeviceSlot] = {}
        self._schedulers: dict[str, ModelScheduler] = {}
        self._draining = False
        self._aborted = False
        keep_image_memory()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        factories: Mapping[str, BackendFactory] | None = None,
        backends: Mapping[str, Backend] | None = None,
        metrics: Metrics | None = None,
        on_load_failure: LoadFailureHandler | None = None,
    ) -> LocalEngine:
        """Every configured model, its backend built by its registered factory (or
        given in ``backends``)."""
        if backends is None:
            backends = create_backends(settings.engine_models, factories)
        return cls(
            settings.engine_models, backends,
            metrics=metrics,
            max_queue=settings.max_queue, batching=settings.batching,
            on_load_failure=on_load_failure,
            max_loaded_models=settings.max_loaded_models,
            memory_budget_bytes=(None if settings.device_memory_budget is None
                                 else int(settings.device_memory_budget * GIB)),
            at_start=settings.start_models,
        )

    def backend(self, model: str) -> Backend:
        try:
            return self._backends[model]
        except KeyError:
            raise UnknownModel(model) from None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._residency.start()
        if not all(self._backends[name].loaded for name in self.at_start):
            # A daemon thread, not the loop's executor: a stop during a long download
            # must not wait for it.
            threading.Thread(target=self._load_reporting, name="diffuserve-load",
                             daemon=True).start()

    def load_all(self) -> None:
        """Load every model meant to load at start that is not loaded yet (blocking)."""
        for name in self.at_start:
            if not self._backends[name].loaded:
                self._backends[name].load()

    def _load_reporting(self) -> None:
        started = time.perf_counter()
        try:
            self.load_all()
        except ModelLoadFailed as exc:
            logger.error("model load failed", extra={"fields": {"error": str(exc)}})
            self._report_failure(str(exc))
            return
        except Exception as exc:  # an unexpected failure is still fatal, and readable
            logger.exception("model load failed")
            self._report_failure(
                f"Could not load the configured models: {type(exc).__name__}: {exc}")
            return
        logger.info("ready", extra={"fields": {
            "load_seconds": round(time.perf_counter() - started, 2)}})

    def _report_failure(self, message: str) -> None:
        if self.on_load_failure is not None:
            self.on_load_failure(message)

    def drain(self) -> None:
        self._draining = True
        for scheduler in self._schedulers.values():
            scheduler.drain()

    def abort(self) -> None:
        self._draining = self._aborted = True
        for scheduler in self._schedulers.values():
            scheduler.abort()

    async def stop(self) -> None:
        self.abort()
        await self._residency.stop()
        for scheduler in self._schedulers.values():
            await scheduler.stop()
        for slot in self._slots.values():
            slot.shutdown()

    # -- models ------------------------------------------------------------------------

    async def models(self) -> list[ModelStatus]:
        return [_status(name, backend, self._residency.unloaded(name))
                for name, backend in self._backends.items()]

    async def ready(self) -> bool:
        """Every model meant to load at start has."""
        return self._residency.ready()

    async def load_model(self, name: str) -> ModelStatus:
        backend = self.backend(name)
        await self._residency.load(name)
        return _status(name, backend, self._residency.unloaded(name))

    async def unload_model(self, name: str) -> ModelStatus:
        backend = self.backend(name)
        await self._residency.unload(name)
        return _status(name, backend, self._residency.unloaded(name))

    async def _drop_scheduler(self, model: str) -> None:
        """Before an unload: the model's scheduler goes (nothing is queued or running
        by then); a new one is made when it serves again."""
        scheduler = self._schedulers.pop(model, None)
        if scheduler is not None:
            await scheduler.stop()

    def scheduler(self, model: str) -> ModelScheduler:
        """The model's scheduler, made on first use (its device is known by then)."""
        scheduler = self._schedulers.get(model)
        if scheduler is None:
            backend = self.backend(model)
            slot = self._slots.get(backend.device)
            if slot is None:
                slot = self._slots[backend.device] = DeviceSlot(backend.device)
            slot.widen(backend.workers)
            scheduler = ModelScheduler(
                model, backend, slot, self.metrics, max_queue=self.max_queue,
                max_batch_images=backend.max_batch_images or self._specs[model].batch_images,
                batching=self.batching,
            )
            if self._draining:
                scheduler.drain()
            if self._aborted:
                scheduler.abort()
            scheduler.start()
            self._schedulers[model] = scheduler
        return scheduler

    # -- tasks -------------------------------------------------------------------------

    async def stream(self, task: Task) -> AsyncIterator[TaskEvent]:
        backend = self.backend(task.model)
        if self._draining and not backend.loaded:
            raise Draining()  # not a load that a draining engine would not use
        arrived = time.monotonic()
        timeout = math.inf if task.deadline is None else task.deadline - time.time()
        deadline = arrived + timeout
        # A model that is not loaded is loaded first (its wait counts as queued).
        async with self._residency.using(task.model, deadline, timeout), aclosing(
                self._stream_loaded(task, backend, arrived, deadline, timeout)) as events:
            async for event in events:
                yield event

    async def _stream_loaded(self, task: Task, backend: Backend, arrived: float,
                             deadline: float, timeout: float,
                             ) -> AsyncGenerator[TaskEvent, None]:
        if task.kind not in backend.tasks:
            raise UnsupportedTask(task.model, f"{task.kind} tasks")
        if task.params.background == "transparent" \
                and TRANSPARENT_BACKGROUND not in backend.features:
            raise UnsupportedTask(task.model, "a transparent background")
        if task.params.lora and not backend.takes_adapters:
            raise UnsupportedTask(task.model, "LoRA adapters", field="lora")
        inputs = 1 + len(task.params.references)
        if inputs > backend.max_input_images:
            raise TooManyImages(task.model, backend.max_input_images, inputs)
        # What only the model knows it cannot draw (an edit without a mask for a model
        # that only inpaints…), refused before it takes a place in the queue.
        backend.check(task.params)
        prompt = task.params.prompt
        # A tokenizer takes 0.4 µs a character: a short prompt is counted here, quicker
        # than a thread hop; a long one (up to 32,000 characters: 14 ms) on a thread.
        prompt_tokens = backend.count_tokens(prompt) if len(prompt) <= INLINE_COUNT_CHARS \
            else await asyncio.to_thread(backend.count_tokens, prompt)
        limit = backend.max_prompt_tokens
        if limit is not None and prompt_tokens > limit:
            raise PromptTooLong(task.model, limit, prompt_tokens)
        scheduler = self.scheduler(task.model)
        job = scheduler.submit(task.params, task.client, deadline, task.request_id,
                               progress=task.progress, previews=task.previews,
                               enqueued=arrived)
        try:
            if task.progress:
                yield Accepted()
            while True:
                waiters: set[asyncio.Future[Any]] = {job.future}
                getter: asyncio.Task[Progress] | None = None
                if job.events is not None:
                    getter = asyncio.ensure_future(job.events.get())
                    waiters.add(getter)
                remaining = deadline - time.monotonic()
                done, _ = await asyncio.wait(
                    waiters, timeout=None if math.isinf(remaining) else max(0.0, remaining),
                    return_when=asyncio.FIRST_COMPLETED)
                if getter is not None and not getter.done():
                    getter.cancel()
                if getter is not None and getter in done:
                    yield getter.result()
                    continue
                if job.future in done:
                    break
                raise DeadlineExceeded(
                    started=job.started is not None, timeout_seconds=round(timeout, 3),
                    retry_after=scheduler.retry_after())
            images = job.future.result()
            yield Result(tuple(images), queued_seconds=_queued(job),
                         run_seconds=_ran(job), batch_images=job.batch_images,
                         prompt_tokens=prompt_tokens)
        finally:
            if not job.future.done() or job.future.cancelled():
                scheduler.abandon(job)


def _status(name: str, backend: Backend, unloaded: bool = False) -> ModelStatus:
    """What the engine reports of one model; what is known only once it is loaded is
    left out until then, but for its defaults once it was ``unloaded`` (a model
    residency unloaded is planned as it will be drawn when loaded again)."""
    if not backend.loaded:
        return ModelStatus(name, loaded=False, quantize=backend.quantize,
                           defaults=backend.defaults if unloaded else None)
    return ModelStatus(name, loaded=True, device=backend.device,
                       max_input_images=backend.max_input_images,
                       tasks=tuple(kind.value for kind in TaskKind if kind in backend.tasks),
                       defaults=backend.defaults, dtype=backend.dtype,
                       quantize=backend.quantize, weight_bytes=backend.weight_bytes)


def _queued(job: Job) -> float:
    return (job.started or job.enqueued) - job.enqueued


def _ran(job: Job) -> float:
    if job.started is None:
        return 0.0
    return (job.finished or time.monotonic()) - job.started


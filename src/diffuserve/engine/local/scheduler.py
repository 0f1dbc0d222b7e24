"""Per-model bounded queues, cross-request batching, fairness, deadlines, cancellation.

Each served model has a :class:`ModelScheduler`: a bounded queue and one asyncio worker.
The worker waits for its device (``DeviceSlot``: one pipeline call per device at a
time, or up to the ``workers`` of a CPU model), takes the oldest request of the next
client in turn, adds compatible requests (equal :meth:`Backend.batch_key`) round-robin
across clients up to ``max_batch_images``, and runs them as one batched call on a device
thread. Results are split back to their requests. A request whose client left, or whose
deadline passed, is dropped from the queue; a batch that nobody waits for any more stops
at its next denoising step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from PIL import Image

from diffuserve.engine.backends.base import Backend, Interrupted
from diffuserve.engine.errors import (
    Cancelled,
    Draining,
    EngineError,
    GenerationFailed,
    OutOfMemory,
    QueueFull,
)
from diffuserve.engine.local.device import DeviceSlot
from diffuserve.engine.types import GenerationParams, Preview, Progress
from diffuserve.metrics import Metrics

logger = logging.getLogger("diffuserve.scheduler")

#: How often a running batch writes a progress line to the log.
PROGRESS_INTERVAL_SECONDS = 10.0


@dataclass(eq=False)
class Job:
    """One admitted request, from the queue to its images."""

    params: GenerationParams
    client: str
    deadline: float
    request_id: str
    future: asyncio.Future[list[Image.Image]]
    #: Where progress events go, when the task asked for them.
    events: asyncio.Queue[Progress] | None = None
    #: Partial images wanted (previews of the first image).
    previews: int = 0
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    batch_images: int = 0
    #: Set when nobody waits for the result any more; read by the device thread.
    abandoned: threading.Event = field(default_factory=threading.Event)


class ModelScheduler:
    """The queue and worker of one model. Create and use it on the event loop."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        slot: DeviceSlot,
        metrics: Metrics,
        *,
        max_queue: int,
        max_batch_images: int,
        batching: bool = True,
    ) -> None:
        self.name = name
        self.backend = backend
        self.slot = slot
        self.metrics = metrics
        self.max_queue = max_queue
        self.max_batch_images = max_batch_images
        self.batching = batching
        self._queues: OrderedDict[str, deque[Job]] = OrderedDict()
        self._queued = 0
        self._queued_images = 0
        self._wakeup = asyncio.Event()
        self._draining = False
        self._stopping = threading.Event()
        #: Batches being drawn (more than one with ``backend.workers``), and their tasks.
        self._running: list[list[Job]] = []
        self._calls: set[asyncio.Task[None]] = set()
        #: This model's own calls at once, within its device's.
        self._workers = asyncio.Semaphore(max(1, backend.workers))
        #: Observed seconds per image (exponential moving average), for retry hints.
        self._seconds_per_image: float | None = None
        self._task: asyncio.Task[None] | None = None

    # -- admission ---------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._queued

    def retry_after(self) -> int:
        """Seconds until the work ahead of a new request is likely done."""
        # Calls side by side (``workers``) each take longer, but finish together.
        per_image = (self._seconds_per_image or 1.0) / max(1, self.backend.workers)
        backlog = self._queued_images + sum(job.params.n for batch in self._running
                                            for job in batch)
        return max(1, min(600, math.ceil(backlog * per_image)))

    def submit(self, params: GenerationParams, client: str, deadline: float,
               request_id: str, *, progress: bool = False, previews: int = 0,
               enqueued: float | None = None) -> Job:
        """Queue a request (``deadline`` on the monotonic clock; ``enqueued``: when it
        came, if it waited before, e.g. for its model's load) or refuse it at once:
        :class:`Draining` while shutting down, :class:`QueueFull` when full."""
        if self._draining:
            raise Draining()
        if self._queued >= self.max_queue:
            raise QueueFull(self.name, self.max_queue, self.retry_after())
        job = Job(params, client, deadline, request_id,
                  asyncio.get_running_loop().create_future(),
                  events=asyncio.Queue() if progress else None, previews=previews)
        if enqueued is not None:
            job.enqueued = enqueued
        self._queues.setdefault(client, deque()).append(job)
        self._queued += 1
        self._queued_images += params.n
        self.metrics.queue_depth.labels(self.name).set(self._queued)
        self._wakeup.set()
        return job

    def abandon(self, job: Job) -> None:
        """Nobody waits for ``job`` any more: drop it if queued, else flag it."""
        job.abandoned.set()
        queue = self._queues.get(job.client)
        if queue is not None and job in queue:
            queue.remove(job)
            self._forget(job)
            if not queue:
                del self._queues[job.client]
        if not job.future.done():
            job.future.cancel()

    def _forget(self, job: Job) -> None:
        self._queued -= 1
        self._queued_images -= job.params.n
        self.metrics.queue_depth.labels(self.name).set(self._queued)

    # -- the worker --------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name=f"scheduler-{self.name}")

    async def _work(self) -> None:
        while True:
            while not self._queued:
                self._wakeup.clear()
                await self._wakeup.wait()
            # A batch is taken only once a call can start, so that what arrives while
            # the device is busy joins the next batch.
            await self._workers.acquire()
            try:
                await self.slot.calls.acquire()
            except BaseException:
                self._workers.release()
                raise
            batch = self._take_batch()
            if not batch:
                self._release()
                continue
            call = asyncio.create_task(self._run(batch), name=f"call-{self.name}")
            self._calls.add(call)
            call.add_done_callback(self._call_done)

    def _release(self) -> None:
        self.slot.calls.release()
        self._workers.release()

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._release()

    def _take_batch(self) -> list[Job]:
        """The next key's oldest request, plus compatible ones, round-robin across keys."""
        if not self._queues:
            return []
        head_client, head_queue = next(iter(self._queues.items()))
        head = head_queue[0]
        batch = [head]
        images = head.params.n
        if self.batching:
            key = self.backend.batch_key(head.params)
            progressed = True
            taken = {id(head)}
            # Other keys first, the head's own key last, one request per key a round.
            order = [*list(self._queues.values())[1:], head_queue]
            while progressed and images < self.max_batch_images:
                progressed = False
                for queue in order:
                    for job in queue:
                        if id(job) in taken:
                            continue
                        if images + job.params.n > self.max_batch_images:
                            continue
                        if self.backend.batch_key(job.params) != key:
                            continue
                        batch.append(job)
                        taken.add(id(job))
                        images += job.params.n
                        progressed = True
                        break  # one per key per round: fair across keys
        for job in batch:
            queue = self._queues[job.client]
            queue.remove(job)
            self._forget(job)
            if not queue:
                del self._queues[job.client]
        # The served key goes to the back of the line.
        if head_client in self._queues:
            self._queues.move_to_end(head_client)
        return batch

    async def _run(self, batch: list[Job]) -> None:
        now = time.monotonic()
        images = sum(job.params.n for job in batch)
        for job in batch:
            job.started = now
            job.batch_images = images
            self.metrics.queue_wait.labels(self.name).observe(now - job.enqueued)
        self.metrics.batch_images.labels(self.name).observe(images)
        self._running.append(batch)
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self.slot.executor, self._generate, batch, loop)
        except Interrupted:
            if self._stopping.is_set():
                self._settle(batch, error=Draining())
                logger.warning("batch stopped: the shutdown grace period ended",
                               extra={"fields": {"model": self.name,
                                                 "request_ids": _ids(batch)}})
            else:
                self._settle(batch, error=Cancelled())
                logger.info("batch stopped: nobody waits for it",
                            extra={"fields": {"model": self.name, "requests": len(batch)}})
        except EngineError as error:  # out of memory even one image at a time
            logger.error("pipeline call failed", extra={"fields": {
                "model": self.name, "error": str(error), "request_ids": _ids(batch)}})
            self._settle(batch, error=error)
        except Exception as exc:  # a failed batch fails its requests, nothing else
            logger.error("pipeline call failed", exc_info=exc,
                         extra={"fields": {"model": self.name, "request_ids": _ids(batch)}})
            self._settle(batch, error=GenerationFailed(self.name, f"{type(exc).__name__}: {exc}"))
        else:
            elapsed = time.monotonic() - now
            self.metrics.generation_seconds.labels(self.name).observe(elapsed)
            self.metrics.images_generated.labels(self.name).inc(images)
            per_image = elapsed / images
            self._seconds_per_image = per_image if self._seconds_per_image is None else (
                0.7 * self._seconds_per_image + 0.3 * per_image)
            for job, result in zip(batch, results, strict=True):
                job.finished = time.monotonic()
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
        finally:
            self._running.remove(batch)

    @staticmethod
    def _settle(batch: list[Job], error: BaseException) -> None:
        for job in batch:
            if not job.future.done():
                job.future.set_exception(error)
                # Whoever waits gets the error; a job nobody waits for any more must not
                # be reported as an exception that was never retrieved.
                job.future.exception()

    def _generate(self, batch: list[Job], loop: asyncio.AbstractEventLoop,
                  ) -> list[list[Image.Image] | EngineError]:
        """On the device thread: draw the batch, halving it while memory runs out."""
        started = time.monotonic()
        last_report = [started]
        first = batch[0].params
        listeners = [job.events for job in batch if job.events is not None]
        # Where each job's first image sits in the call, and at which steps its partial
        # images fall: evenly spaced, the last one before the end.
        offsets = [sum(job.params.n for job in batch[:i]) for i in range(len(batch))]
        sent = [0] * len(batch)

        def on_step(step: int, total: int, preview: Preview | None = None) -> None:
            if self._stopping.is_set() or all(job.abandoned.is_set() for job in batch):
                raise Interrupted()
            if listeners:
                event = Progress(step, total)
                for events in listeners:
                    loop.call_soon_threadsafe(events.put_nowait, event)
            if preview is not None:
                for index, job in enumerate(batch):
                    if job.events is None or sent[index] >= job.previews \
                            or step < preview_step(sent[index], job.previews, total):
                        continue
                    image = preview(offsets[index])
                    if image is not None:
                        loop.call_soon_threadsafe(job.events.put_nowait, Progress(
                            step, total, preview=image, preview_index=sent[index]))
                        sent[index] += 1
            now = time.monotonic()
            if now - last_report[0] >= PROGRESS_INTERVAL_SECONDS:
                last_report[0] = now
                logger.info("progress", extra={"fields": {
                    "model": self.name, "step": step, "steps": total,
                    "images": sum(job.params.n for job in batch),
                    "size": f"{first.width}x{first.height}",
                    "elapsed_seconds": round(now - started, 1),
                    "request_ids": _ids(batch)}})

        max_images = self.max_batch_images
        while True:
            try:
                return self.backend.generate_batch(
                    [job.params for job in batch], max_images, on_step
                )
            except OutOfMemory:
                if max_images == 1:
                    raise
                max_images = max(1, max_images // 2)
                logger.warning("out of memory: retrying with smaller batches",
                               extra={"fields": {"model": self.name,
                                                 "max_images": max_images}})

    # -- shutdown ----------------------------------------------------------------------

    def drain(self) -> None:
        """Refuse new work and everything still queued (:class:`Draining`). What is
        running finishes."""
        self._draining = True
        for queue in self._queues.values():
            for job in queue:
                if not job.future.done():
                    job.future.set_exception(Draining())
        self._queues.clear()
        self._queued = self._queued_images = 0
        self.metrics.queue_depth.labels(self.name).set(0)

    def abort(self) -> None:
        """Refuse running work now; its pipeline call stops at its next step."""
        self.drain()
        self._stopping.set()
        for batch in self._running:
            self._settle(batch, error=Draining())

    async def stop(self) -> None:
        """Stop the worker; a batch still running stops at its next step."""
        self.abort()
        for task in [self._task, *self._calls]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def preview_step(index: int, previews: int, total: int) -> int:
    """The step after which partial image ``index`` of ``previews`` is shown."""
    return max(1, min(total - 1, round(total * (index + 1) / (previews + 1))))


def _ids(batch: list[Job]) -> list[str]:
    return [job.request_id for job in batch]

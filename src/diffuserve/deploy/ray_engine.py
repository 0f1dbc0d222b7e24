"""RayEngine: the :class:`~diffuserve.engine.client.EngineClient` of the Ray ingress.

Each model is a Ray Serve deployment (:class:`~diffuserve.deploy.ray_serve.ModelServer`);
this client reaches it through a streaming deployment handle and turns Ray's own
failures into engine errors, so the HTTP layer answers exactly as it does in one
process:

- the handle's queue is full (``max_queued_requests``): :class:`QueueFull` (429);
- the replica died or became unreachable mid-task: :class:`WorkerLost` (503, retryable);
- an engine error raised on the replica: that error, unwrapped from Ray's envelope;
- no replica answered before the task's deadline: :class:`DeadlineExceeded`.

Closing the stream (the client went away) cancels the call, and Ray cancels the
replica's coroutine, which abandons the task in the replica's queue.

A task with LoRA adapters is sent with its adapter set's id as Ray Serve's multiplexed
model id (:func:`adapter_set_id`): Ray routes it preferably to a replica that drew with
that set lately, whose weights have it loaded (a switch of adapters costs a load from
disk); a task without adapters names no id and goes to any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ray.exceptions import RayActorError, RayTaskError, TaskCancelledError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from diffuserve.engine.client import EngineClient
from diffuserve.engine.errors import (
    DeadlineExceeded,
    Draining,
    EngineError,
    GenerationFailed,
    QueueFull,
    ResidencyRefused,
    UnknownModel,
    WorkerLost,
)
from diffuserve.engine.types import ModelStatus, Result, Task, TaskEvent

logger = logging.getLogger("diffuserve.engine")

#: The replica enforces a task's deadline and says whether its turn came; this client
#: waits that much longer before it gives up on a replica that never answered at all.
DEADLINE_GRACE_SECONDS = 2.0
#: How long ``models()`` waits for a model's replicas to say whether they are loaded.
STATUS_TIMEOUT_SECONDS = 2.0
#: Why a model is not loaded or unloaded on request under Ray.
RAY_RESIDENCY = ("each model is a Ray Serve deployment whose replicas Ray starts and stops "
                 "(num_replicas, min_replicas/max_replicas)")
#: Retry-After when Ray's queue is full and it names no wait of its own.
BACKPRESSURE_RETRY_SECONDS = 2


def adapter_set_id(lora: tuple[tuple[str, float], ...]) -> str | None:
    """The multiplexed model id of a task's adapters (``GenerationParams.lora``, the
    canonical set: sorted, no scale 0), the same in every process; None without any."""
    if not lora:
        return None
    canonical = json.dumps([[name, float(scale)] for name, scale in lora])
    return "lora-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


class RayEngine(EngineClient):
    """Tasks sent to one Ray Serve deployment per model through deployment handles."""

    def __init__(self, handles: Mapping[str, DeploymentHandle[Any]], *,
                 max_queued: int = 0) -> None:
        self._handles = dict(handles)
        #: Ray's queue limit in front of every model (``max_queued_requests``).
        self._max_queued = max_queued
        self._draining = False
        self._running: set[DeploymentResponseGenerator[Any]] = set()

    async def start(self) -> None:
        """Nothing to start: Ray started the replicas, each loads its model first."""

    def _handle(self, model: str) -> DeploymentHandle[Any]:
        try:
            return self._handles[model]
        except KeyError:
            raise UnknownModel(model) from None

    async def stream(self, task: Task) -> AsyncIterator[TaskEvent]:
        handle = self._handle(task.model)
        if self._draining:
            raise Draining()
        options: dict[str, Any] = {"stream": True}
        adapters = adapter_set_id(task.params.lora)
        if adapters is not None:
            options["multiplexed_model_id"] = adapters
        calls: Any = handle.options(**options)
        response: DeploymentResponseGenerator[Any] = calls.stream.remote(task)
        self._running.add(response)
        events = response.__aiter__()
        submitted = time.time()
        answered = finished = False
        try:
            while True:
                try:
                    event = await asyncio.wait_for(anext(events), self._time_left(task))
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise DeadlineExceeded(
                        started=answered,
                        timeout_seconds=round((task.deadline or submitted) - submitted, 3),
                        retry_after=BACKPRESSURE_RETRY_SECONDS) from None
                answered = True
                if isinstance(event, Result):
                    finished = True
                yield event
        except RayTaskError as exc:  # Ray's envelope (also a subclass of what it wraps)
            raise _unwrap(task.model, exc) from None
        except (EngineError, GeneratorExit, asyncio.CancelledError):
            raise
        except BackPressureError as exc:
            retry = exc.retry_after_s or BACKPRESSURE_RETRY_SECONDS
            raise QueueFull(task.model, self._max_queued,
                            max(1, math.ceil(retry))) from None
        except (RayActorError, DeploymentUnavailableError) as exc:
            logger.warning("replica lost", extra={"fields": {
                "model": task.model, "request_id": task.request_id,
                "error": type(exc).__name__}})
            raise WorkerLost(task.model) from None
        except TaskCancelledError:
            # Ours (abort) or Ray's own (the replica is being shut down).
            raise Draining() from None
        finally:
            self._running.discard(response)
            if not finished:
                _cancel(response)

    @staticmethod
    def _time_left(task: Task) -> float | None:
        if task.deadline is None:
            return None
        return max(0.0, task.deadline + DEADLINE_GRACE_SECONDS - time.time())

    async def models(self) -> list[ModelStatus]:
        return list(await asyncio.gather(*(self._status(name) for name in self._handles)))

    async def model(self, name: str) -> ModelStatus | None:
        # Only the model's own replicas are asked.
        return await self._status(name) if name in self._handles else None

    async def _status(self, name: str) -> ModelStatus:
        try:
            statuses: list[ModelStatus] = await asyncio.wait_for(
                self._handles[name].status.remote(), STATUS_TIMEOUT_SECONDS)
        except Exception:  # no replica up (yet), or it is dying: not ready
            return ModelStatus(name, loaded=False)
        for status in statuses:
            if status.name == name:
                return status
        return ModelStatus(name, loaded=False)

    async def load_model(self, name: str) -> ModelStatus:
        raise ResidencyRefused(name, RAY_RESIDENCY)

    async def unload_model(self, name: str) -> ModelStatus:
        raise ResidencyRefused(name, RAY_RESIDENCY)

    def drain(self) -> None:
        self._draining = True

    def abort(self) -> None:
        self._draining = True
        for response in list(self._running):
            _cancel(response)

    async def stop(self) -> None:
        self.abort()


def _cancel(response: DeploymentResponseGenerator[Any]) -> None:
    """Cancel a call, whatever became of it. Ray's ``cancel`` fetches the call's
    assignment first and re-raises its failure (back-pressure, a dead replica), which
    must not replace the engine error already on its way."""
    with contextlib.suppress(Exception):
        response.cancel()  # type: ignore[no-untyped-call]


def _unwrap(model: str, exc: RayTaskError) -> EngineError:
    """The engine error a replica raised, or a failure that names only its type."""
    cause = exc.cause
    if isinstance(cause, EngineError):
        return cause
    if isinstance(cause, (RayActorError, DeploymentUnavailableError)):
        return WorkerLost(model)
    logger.error("replica failed", extra={"fields": {"model": model, "error": str(exc)}})
    return GenerationFailed(model, type(cause).__name__)

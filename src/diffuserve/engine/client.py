"""EngineClient: the one async seam between the service and whatever draws the images.

The service speaks only this interface, whether the engine runs in this process
(:class:`~diffuserve.engine.local.engine.LocalEngine`), on replicas elsewhere, or is an
upstream API. An implementation raises only :mod:`diffuserve.engine.errors`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from diffuserve.engine.errors import GenerationFailed, ResidencyRefused
from diffuserve.engine.types import ModelStatus, Result, Task, TaskEvent


class EngineClient(ABC):
    """Submit tasks, follow them, know what is served; start, drain and stop."""

    @abstractmethod
    async def start(self) -> None:
        """Begin serving (models may go on loading in the background)."""

    @abstractmethod
    def stream(self, task: Task) -> AsyncIterator[TaskEvent]:
        """Run ``task``: :class:`Progress` events if it asked for them, then one
        :class:`Result`. Closing the iterator or cancelling its consumer cancels the
        task; work nobody waits for stops at its next step."""

    async def run(self, task: Task) -> Result:
        """Run ``task`` to its result."""
        stream = self.stream(task)
        try:
            async for event in stream:
                if isinstance(event, Result):
                    return event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        raise GenerationFailed(task.model, "the engine ended the task without a result")

    @abstractmethod
    async def models(self) -> list[ModelStatus]:
        """Every model the engine serves, loaded or not."""

    async def model(self, name: str) -> ModelStatus | None:
        """One model as the engine sees it; None where it serves no such model. (Engines
        that can ask about one model alone override it.)"""
        return next((model for model in await self.models() if model.name == name), None)

    async def ready(self) -> bool:
        """Every model meant to load at start is loaded."""
        return all(model.loaded for model in await self.models())

    async def load_model(self, name: str) -> ModelStatus:
        """Load model ``name`` now, making room as a request for it would, and return
        once it is loaded (:class:`~diffuserve.engine.errors.ResidencyRefused` where this
        engine does not load models on request)."""
        raise ResidencyRefused(name, "this engine loads its models itself")

    async def unload_model(self, name: str) -> ModelStatus:
        """Unload model ``name`` once the requests holding it are done, and return
        then."""
        raise ResidencyRefused(name, "this engine loads its models itself")

    @abstractmethod
    def drain(self) -> None:
        """Take no new work and refuse what is queued; running work goes on."""

    @abstractmethod
    def abort(self) -> None:
        """Refuse running work at once (it stops at its next step): the end of a
        shutdown's grace period."""

    @abstractmethod
    async def stop(self) -> None:
        """Drain, abort, and release every worker."""

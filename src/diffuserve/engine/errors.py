"""The engine's own errors: no HTTP statuses, no OpenAI names, every one picklable.

A replica on another process or machine raises these across the boundary, so each must
survive ``pickle`` with its fields intact; the HTTP layer alone decides what a client
sees for each (:mod:`diffuserve.api.errors`).
"""

from __future__ import annotations

from typing import Any


def _restore(cls: type[EngineError], args: tuple[Any, ...],
             state: dict[str, Any]) -> EngineError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class EngineError(Exception):
    """Base of everything the engine raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own pickling calls ``cls(*args)``, which fails for keyword-only
        # fields; rebuild from the instance's state instead.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class QueueFull(EngineError):
    """The model's queue holds as many tasks as it may; try again after ``retry_after``."""

    def __init__(self, model: str, limit: int, retry_after: int) -> None:
        super().__init__(f"the queue of model {model!r} is full ({limit} tasks)")
        self.model = model
        self.limit = limit
        self.retry_after = retry_after


class Draining(EngineError):
    """The engine is shutting down: it takes no new work, and queued work is refused."""

    def __init__(self, retry_after: int = 5) -> None:
        super().__init__("the engine is shutting down")
        self.retry_after = retry_after


class WorkerLost(EngineError):
    """The worker running the task went away (a replica died or became unreachable);
    the same task may succeed on another after ``retry_after``."""

    def __init__(self, model: str, retry_after: int = 2) -> None:
        super().__init__(f"the worker serving model {model!r} was lost")
        self.model = model
        self.retry_after = retry_after


class ModelNotLoaded(EngineError):
    """The model is still loading."""

    def __init__(self, model: str, retry_after: int = 5) -> None:
        super().__init__(f"model {model!r} is still loading")
        self.model = model
        self.retry_after = retry_after


class ResidencyRefused(EngineError):
    """A model cannot be loaded or unloaded on request here (``reason``: a phrase for a
    person, such as "its replicas are managed by Ray Serve")."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} cannot be loaded or unloaded on request: {reason}")
        self.model = model
        self.reason = reason


class UnknownModel(EngineError):
    """The engine serves no model of this name (a caller's configuration error)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"the engine serves no model {model!r}")
        self.model = model


class UnsupportedTask(EngineError):
    """The model's runtime cannot do what the task asks (``kind``: a phrase such as
    "edit tasks" or "a transparent background"; ``field``: the
    :class:`~diffuserve.engine.types.GenerationParams` field it cannot honour, where one
    alone is the cause)."""

    def __init__(self, model: str, kind: str, field: str | None = None) -> None:
        super().__init__(f"model {model!r} cannot do {kind!r} tasks")
        self.model = model
        self.kind = kind
        self.field = field


class TooManyImages(EngineError):
    """An edit sent more images (``given``: the image and its references) than the model
    takes in one edit (``limit``)."""

    def __init__(self, model: str, limit: int, given: int) -> None:
        super().__init__(f"model {model!r} takes at most {limit} images in one edit; "
                         f"{given} were given")
        self.model = model
        self.limit = limit
        self.given = given


class PromptTooLong(EngineError):
    """The prompt is ``given`` tokens long and the model's text encoder reads at most
    ``limit``."""

    def __init__(self, model: str, limit: int, given: int) -> None:
        super().__init__(f"the prompt is {given} tokens long; model {model!r} reads at "
                         f"most {limit}")
        self.model = model
        self.limit = limit
        self.given = given


class DeadlineExceeded(EngineError):
    """The task's deadline passed: before its turn came (``started`` false: the engine
    is overloaded) or while it was being drawn."""

    def __init__(self, *, started: bool, timeout_seconds: float, retry_after: int) -> None:
        where = "while drawing" if started else "before its turn came"
        super().__init__(f"the deadline of {timeout_seconds:g}s passed {where}")
        self.started = started
        self.timeout_seconds = timeout_seconds
        self.retry_after = retry_after


class Cancelled(EngineError):
    """The task was stopped before it finished because nobody waits for it."""

    def __init__(self) -> None:
        super().__init__("the task was cancelled before it finished")


class OutOfMemory(EngineError):
    """The device ran out of memory, even for one image per call."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ContentFlagged(EngineError):
    """The pipeline's safety checker flagged an image of this task."""

    def __init__(self) -> None:
        super().__init__("the pipeline's safety checker flagged the image")


class GenerationFailed(EngineError):
    """The runtime raised: the details are in the engine's log, not for clients."""

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(f"model {model!r} failed: {detail}")
        self.model = model
        self.detail = detail


class ModelLoadFailed(EngineError):
    """A configured model could not be loaded; the message is meant for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

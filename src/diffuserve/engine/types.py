"""Plain data that crosses the engine seam: tasks in, events out. All picklable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from PIL import Image

#: Called from the worker thread after each denoising step: (step, total_steps).
StepCallback = Callable[[int, int], None]


class TaskKind(StrEnum):
    """What a task asks the engine to do."""

    GENERATE = "generate"


@dataclass(frozen=True)
class GenerationParams:
    """One pipeline request: ``len(seeds)`` images of one prompt at one output size."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seeds: tuple[int, ...]
    #: ``transparent``: an RGBA image whose background is see-through (a backend
    #: feature, :data:`TRANSPARENT_BACKGROUND`); ``opaque``: RGB.
    background: str = "opaque"

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class Task:
    """One unit of work submitted to an engine.

    ``deadline`` is wall-clock time (``time.time()``), so it means the same on every
    machine of a cluster; ``client`` is who the work is for, for fairness between
    clients; ``progress`` asks for :class:`Progress` events while the task runs.
    """

    model: str
    params: GenerationParams
    kind: TaskKind = TaskKind.GENERATE
    client: str = "anonymous"
    request_id: str = ""
    deadline: float | None = None
    progress: bool = False


@dataclass(frozen=True)
class Progress:
    """The task's batch finished denoising step ``step`` of ``total``."""

    step: int
    total: int


@dataclass(frozen=True)
class Result:
    """The task's images, exactly ``params.n`` of exactly the requested size."""

    images: tuple[Image.Image, ...]
    queued_seconds: float
    run_seconds: float
    #: Images in the pipeline call(s) this task shared.
    batch_images: int = field(default=0)
    #: The prompt's length in the model's own tokens (for usage accounting).
    prompt_tokens: int = 0


#: The backend feature a transparent background needs.
TRANSPARENT_BACKGROUND = "transparent_background"

#: What :meth:`EngineClient.stream` yields: progress, then one result.
TaskEvent = Progress | Result


@dataclass(frozen=True)
class ModelStatus:
    """One model as the engine sees it."""

    name: str
    loaded: bool
    device: str | None = None

"""Plain data that crosses the engine seam: tasks in, events out. All picklable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from PIL import Image

#: Given an image's index in the whole pipeline call, a preview of it as it stands (the
#: predicted clean image, decoded), or None when it is not in the part being drawn.
Preview = Callable[[int], Image.Image | None]


class StepCallback(Protocol):
    """Called from the worker thread after each denoising step. Backends that can show
    work in progress pass ``preview``."""

    def __call__(self, step: int, total: int, preview: Preview | None = None) -> None: ...


class TaskKind(StrEnum):
    """What a task asks the engine to do."""

    GENERATE = "generate"
    #: Redraw given images: where a mask says (inpainting), or all over (image to image).
    EDIT = "edit"
    #: Draw the given image again, differently, without a prompt.
    VARIATION = "variation"


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
    #: Edits and variations: the image to start from (RGB), the area to redraw (``L``,
    #: white = redraw, as diffusers' inpainting pipelines take it; None: all of it) and
    #: how far from the image to go (0: keep it, 1: only what the mask keeps survives).
    image: Image.Image | None = None
    mask: Image.Image | None = None
    strength: float = 1.0
    #: Edits of several images: the images after ``image`` (RGB), in the order sent, for
    #: pipelines that take several references; ``mask`` applies to ``image`` alone.
    references: tuple[Image.Image, ...] = ()
    #: LoRA adapters to draw with: (name, scale) pairs, sorted by name, no scale 0
    #: (:func:`diffuserve.engine.adapters.canonical`); empty: the model's weights alone.
    lora: tuple[tuple[str, float], ...] = ()

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
    #: Partial images wanted: previews of the first image at evenly spaced steps,
    #: delivered as :class:`Progress` events (``progress`` must be set too).
    previews: int = 0


@dataclass(frozen=True)
class Accepted:
    """The task is queued (sent first to tasks that asked for progress)."""


@dataclass(frozen=True)
class Progress:
    """The task's batch finished denoising step ``step`` of ``total``; at preview steps
    it carries ``preview`` (number ``preview_index``, from 0) of the task's first image."""

    step: int
    total: int
    preview: Image.Image | None = None
    preview_index: int = -1


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
TaskEvent = Accepted | Progress | Result


@dataclass(frozen=True)
class ModelDefaults:
    """How a model is drawn where its configuration says nothing: the steps and guidance
    its family's model card gives (the service scales them by ``quality`` and ``style``)."""

    steps: int
    guidance_scale: float
    #: Steps for ``quality=hd``; None: the service's rule (1.6 x ``steps``).
    hd_steps: int | None = None


@dataclass(frozen=True)
class ModelStatus:
    """One model as the engine sees it."""

    name: str
    loaded: bool
    device: str | None = None
    #: Images one edit may take (``image`` and its ``references``); None: not known until
    #: the model is loaded.
    max_input_images: int | None = None
    #: What it can do (:class:`TaskKind` values); empty until the model is loaded.
    tasks: tuple[str, ...] = ()
    #: The steps and guidance it is drawn with where its configuration sets none; None:
    #: not loaded yet, or it has none of its own.
    defaults: ModelDefaults | None = None
    #: What its weights are held as (``float16``…; None: not loaded), and how they are
    #: quantised (``int8``…; None: not at all).
    dtype: str | None = None
    quantize: str | None = None
    #: Bytes its weights hold in memory while loaded (None: not loaded, or not known).
    weight_bytes: int | None = None

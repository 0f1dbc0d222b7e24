"""Plain data passed between the service and the backends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Called from the worker thread after each denoising step: (step, total_steps).
StepCallback = Callable[[int, int], None]


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

    @property
    def n(self) -> int:
        return len(self.seeds)


class OutOfMemory(Exception):
    """The device ran out of memory for a pipeline call; a smaller batch may fit."""


class Interrupted(Exception):
    """Raised from a step callback: nobody waits for this batch any more."""

"""Backends that draw without a model: flat colours from the seed and prompt."""

from __future__ import annotations

import threading
import time

from PIL import Image

from diffuserve.engine.backends.base import Backend
from diffuserve.engine.types import GenerationParams, StepCallback


class FakeBackend(Backend):
    """Draws a flat colour derived from the seed and prompt; records every call.

    ``delay`` makes a call take time; ``error`` makes it raise.
    """

    def __init__(self, device: str = "fake", delay: float = 0.0,
                 error: BaseException | None = None, loaded: bool = True) -> None:
        self.device = device
        self.delay = delay
        self.error = error
        self._loaded = loaded
        self.calls: list[GenerationParams] = []

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        self._loaded = True

    def generate(
        self, params: GenerationParams, on_step: StepCallback | None = None
    ) -> list[Image.Image]:
        self.calls.append(params)
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return [
            Image.new("RGB", (params.width, params.height),
                      ((seed * 37) % 256, (seed * 91) % 256, len(params.prompt) % 256))
            for seed in params.seeds
        ]


class SlowLoadingBackend(FakeBackend):
    """A fake whose ``load`` waits until ``release`` is set (or 10 s pass)."""

    def __init__(self) -> None:
        super().__init__(loaded=False)
        self.release = threading.Event()

    def load(self) -> None:
        self.release.wait(10)
        super().load()

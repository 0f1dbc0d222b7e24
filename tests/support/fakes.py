"""Backends that draw without a model: flat colours from the seed and prompt."""

from __future__ import annotations

import threading
import time

from PIL import Image

from diffuserve.engine.backends.base import Backend
from diffuserve.engine.errors import ModelLoadFailed
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


class ResidentBackend(FakeBackend):
    """A fake that can be unloaded, holding ``weights`` bytes while loaded; records its
    loads and unloads in ``log`` (shared between fakes to see their order). ``gate``,
    when given, holds each load until it is set; ``fail_loads`` loads fail first."""

    unloads = True

    def __init__(self, name: str, log: list[str], *, weights: int = 1000,
                 loaded: bool = False, delay: float = 0.0,
                 gate: threading.Event | None = None, fail_loads: int = 0) -> None:
        super().__init__(loaded=loaded, delay=delay)
        self.name = name
        self.log = log
        self.weights = weights
        self.gate = gate
        self.fail_loads = fail_loads

    def load(self) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_loads:
            self.fail_loads -= 1
            raise ModelLoadFailed(f"Could not load model {self.name!r}: the disk is gone.")
        self.log.append(f"load {self.name}")
        super().load()

    def unload(self) -> None:
        self.log.append(f"unload {self.name}")
        self._loaded = False

    @property
    def weight_bytes(self) -> int | None:
        return self.weights if self.loaded else None

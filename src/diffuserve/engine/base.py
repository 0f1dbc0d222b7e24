"""The one small interface every runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from PIL import Image

from diffuserve.engine.types import GenerationParams, StepCallback


class Backend(ABC):
    """A loaded text-to-image model on one device.

    ``load`` and ``generate`` block and run on the device's worker thread, never on
    the event loop. ``generate`` returns exactly ``params.n`` images of exactly
    ``params.width``×``params.height``, image *i* drawn from ``params.seeds[i]``.
    """

    #: A key shared by backends that must not run concurrently (one per device).
    device: str = "cpu"

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def generate(
        self, params: GenerationParams, on_step: StepCallback | None = None
    ) -> list[Image.Image]: ...

    @property
    def loaded(self) -> bool:
        return True

    def describe(self) -> dict[str, object]:
        """Facts worth logging at start-up (device, dtype, native resolution…)."""
        return {"device": self.device}

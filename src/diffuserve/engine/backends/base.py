"""The one small interface every runtime implements, below the engine's queue."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence

from PIL import Image

from diffuserve.engine.errors import ContentFlagged, EngineError
from diffuserve.engine.types import GenerationParams, ModelDefaults, StepCallback, TaskKind

_WORDS = re.compile(r"\w+|[^\w\s]")


class Interrupted(Exception):
    """Raised from a step callback: stop this pipeline call now."""


class Backend(ABC):
    """A text-to-image model on one device.

    ``load`` and ``generate_batch`` block and run on the device's worker thread, never on
    the event loop. Each request gets exactly ``params.n`` images of exactly
    ``params.width``×``params.height``, image *i* drawn from ``params.seeds[i]``.
    A backend is built from its :class:`~diffuserve.config.ModelSpec` by a factory
    registered under the ``diffuserve.backends`` entry-point group.
    """

    #: Backends with the same device run one call at a time, unless they allow more.
    device: str = "cpu"
    #: Calls of this backend that may run at once, each on its own device thread
    #: (``workers``, known once loaded): ``generate_batch`` must then be safe to call
    #: from that many threads together.
    workers: int = 1
    #: The kinds of task this runtime can do.
    tasks: frozenset[TaskKind] = frozenset({TaskKind.GENERATE})
    #: Optional abilities (``TRANSPARENT_BACKGROUND``…), known once loaded.
    features: frozenset[str] = frozenset()
    #: Images one edit may take (``params.image`` and its ``references``), known once
    #: loaded; the engine refuses more (:class:`~diffuserve.engine.errors.TooManyImages`).
    max_input_images: int = 1
    #: The text encoder's window in :meth:`count_tokens`' tokens, known once loaded; the
    #: engine refuses longer prompts (:class:`~diffuserve.engine.errors.PromptTooLong`).
    #: None: no limit, or none known.
    max_prompt_tokens: int | None = None
    #: Images per call this backend chose once loaded (``max_batch_size = "auto"``);
    #: None: the model's ``max_batch_size``.
    max_batch_images: int | None = None
    #: The steps and guidance the model is drawn with where its spec sets none, known
    #: once loaded (reported in :class:`~diffuserve.engine.types.ModelStatus`); None:
    #: none of its own.
    defaults: ModelDefaults | None = None
    #: Whether requests may name LoRA adapters (``params.lora``), known once loaded;
    #: the engine refuses them for a backend that takes none.
    takes_adapters: bool = False
    #: Whether :meth:`unload` gives the weights back (the engine unloads no other).
    unloads: bool = False

    @abstractmethod
    def load(self) -> None:
        """Load the weights; raise :class:`~diffuserve.engine.errors.ModelLoadFailed`
        with a message for a person when that is impossible."""

    def unload(self) -> None:
        """Give the weights' memory back (:attr:`loaded` is false after it, and
        :meth:`load` may follow). Called on a worker thread, never while a call of this
        backend runs; only where :attr:`unloads`."""
        raise NotImplementedError(f"{type(self).__name__} cannot unload its weights")

    @property
    def weight_bytes(self) -> int | None:
        """Bytes the loaded weights hold in memory; None: not loaded, or not known."""
        return None

    @property
    def dtype(self) -> str | None:
        """What the loaded weights are held as (``float16``…); None: not known."""
        return None

    @property
    def quantize(self) -> str | None:
        """How the loaded weights are quantised (``int8``…); None: not at all."""
        return None

    @abstractmethod
    def generate(
        self, params: GenerationParams, on_step: StepCallback | None = None
    ) -> list[Image.Image]: ...

    def check(self, params: GenerationParams) -> None:
        """Refuse, before it is queued, a request this loaded model cannot draw as asked
        (:class:`~diffuserve.engine.errors.UnsupportedTask`,
        :class:`~diffuserve.engine.errors.TooManyImages`): what the engine's own checks of
        :attr:`tasks`, :attr:`features` and :attr:`max_input_images` cannot see, such as
        an edit without a mask for a model that only inpaints. Called on the event loop:
        cheap, no I/O."""
        return  # by default, nothing more to refuse

    def batch_key(self, params: GenerationParams) -> Hashable:
        """Requests with equal keys can share one pipeline call."""
        return (params.width, params.height, params.num_inference_steps,
                params.guidance_scale, params.negative_prompt is None, params.background)

    def count_tokens(self, text: str) -> int:
        """``text``'s length in the model's own tokens; without a tokenizer, words and
        punctuation marks."""
        return len(_WORDS.findall(text))

    def generate_batch(
        self,
        requests: Sequence[GenerationParams],
        max_images: int,
        on_step: StepCallback | None = None,
    ) -> list[list[Image.Image] | EngineError]:
        """Draw several compatible requests (equal :meth:`batch_key`), at most
        ``max_images`` images per pipeline call; one list of images per request, or the
        error that refuses that request alone (a safety checker's verdict).

        Raises :class:`~diffuserve.engine.errors.OutOfMemory` when the device ran out
        of memory, so the caller can retry with a smaller ``max_images``. ``on_step``
        may raise :class:`Interrupted` to stop early.
        """
        results: list[list[Image.Image] | EngineError] = []
        for params in requests:
            try:
                results.append(self.generate(params, on_step))
            except EngineError as error:
                if not isinstance(error, ContentFlagged):
                    raise
                results.append(error)
        return results

    @property
    def loaded(self) -> bool:
        return True

    def describe(self) -> dict[str, object]:
        """Facts worth logging at start-up (device, dtype, native resolution…)."""
        return {"device": self.device}


"""DiffusersBackend: one diffusers pipeline served below the engine's queue."""

from __future__ import annotations

import copy
import inspect
import logging
import threading
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.backends.diffusers import tuning
from diffuserve.engine.backends.diffusers.calling import (
    ImageEntries,
    call_pipeline,
    graph_thread,
)
from diffuserve.engine.backends.diffusers.edits import edit_arguments, edit_pipelines
from diffuserve.engine.backends.diffusers.lanes import Lane, Lanes, open_lanes
from diffuserve.engine.backends.diffusers.loading import (
    load_pipeline,
    native_resolution,
    pick_device,
)
from diffuserve.engine.backends.diffusers.previews import step_callback
from diffuserve.engine.errors import EngineError, ModelLoadFailed
from diffuserve.engine.resolution import plan_size
from diffuserve.engine.types import (
    TRANSPARENT_BACKGROUND,
    GenerationParams,
    StepCallback,
    TaskKind,
)

logger = logging.getLogger(__name__)


class DiffusersBackend(Backend):
    """Serves one diffusers pipeline: one call at a time, or up to ``workers`` at once on
    a CPU, each with a :class:`~diffuserve.engine.backends.diffusers.lanes.Lane` of its
    own."""

    def __init__(self, spec: ModelSpec, *, show_progress: bool = False) -> None:
        self.spec = spec
        self.show_progress = show_progress
        self.device = "unloaded"
        self.pipeline: Any = None
        self.native_resolution = spec.resolution or 512
        self.size_multiple = 8
        #: The arguments the pipeline's ``__call__`` takes: nothing else is passed.
        self._accepted: frozenset[str] = frozenset()
        self._scheduler: Any = None
        self._draws_any_size = False
        #: What runs the denoiser: "torch", or "onnx" (ONNX Runtime, ``runtime = "onnx"``).
        self.runtime = "torch"
        #: The tokenizer that counts prompts for ``usage``: a copy of the pipeline's, used
        #: by one thread at a time. A fast tokenizer keeps its padding and truncation
        #: settings between calls, so counting with the pipeline's own while a pipeline
        #: call encodes its prompts changed how that call padded them.
        self._counter: tuple[Any, Any] | None = None
        self._counter_lock = threading.Lock()
        #: The one thread every pipeline call runs on when the model records CUDA graphs
        #: (see :data:`~diffuserve.engine.backends.diffusers.calling.GRAPH_MODES`).
        self._graph_thread: ThreadPoolExecutor | None = None
        #: Lanes not in use; a call takes one and gives it back.
        self._lanes = Lanes()

    @property
    def loaded(self) -> bool:
        return self.pipeline is not None

    def load(self) -> None:
        device = pick_device(self.spec.device)
        self._finish_load(load_pipeline(self.spec, device), device)

    def _finish_load(self, pipeline: Any, device: str) -> None:
        import torch

        spec = self.spec
        pipeline = pipeline.to(device)
        pipeline.set_progress_bar_config(disable=not self.show_progress, leave=self.show_progress)
        self._accepted = frozenset(inspect.signature(pipeline.__call__).parameters)
        if "prompt" not in self._accepted or "generator" not in self._accepted:
            raise ModelLoadFailed(
                f"Could not load model {spec.name!r} from {spec.source!r}: "
                f"{type(pipeline).__name__} is not a text-to-image pipeline."
            )
        vae_scale = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
        self.size_multiple = max(8, vae_scale * 2)
        if spec.resolution is None:
            self.native_resolution = native_resolution(pipeline, vae_scale)
        self._scheduler = pipeline.scheduler
        self._draws_any_size = bool(getattr(pipeline, "draws_any_size", False))
        # A pipeline that takes `background` draws transparent backgrounds itself.
        self.features = (frozenset({TRANSPARENT_BACKGROUND}) if "background" in self._accepted
                         else frozenset())
        editors = edit_pipelines(pipeline)
        if editors or "image" in self._accepted:
            self.tasks = frozenset({TaskKind.GENERATE, TaskKind.EDIT, TaskKind.VARIATION})
        self.device = device
        torch.set_grad_enabled(False)
        self.max_batch_images = spec.max_batch_size if spec.max_batch_size != "auto" \
            else self._measure_batch(pipeline, device)
        self._graph_thread = graph_thread(spec)
        if spec.compile != "off":
            tuning.compile_and_warm(
                pipeline, spec, device, native_resolution=self.native_resolution,
                drawn_at=self._draw_size_of, max_images=self.max_batch_images or 1,
                probe=partial(self._probe_call, pipeline))
        if spec.runtime == "onnx":
            self.runtime = tuning.use_onnx(pipeline, spec, device)
        side = self.native_resolution
        # A load again starts afresh.
        self._lanes = open_lanes(spec, device, Lane(pipeline, editors),
                                 warm=lambda twin: self._probe_call(twin, 1, side, side))
        self.workers = self._lanes.count
        self.pipeline = pipeline  # loaded (and ready) only now
        # The token counter's own tokenizer is copied now (25 ms for the built-in
        # model's), not by the first request: short prompts are counted on the event loop.
        self.count_tokens("")
        logger.info("model loaded", extra={"fields": {"model": spec.name, **self.describe()}})

    def _probe_call(self, pipeline: Any, images: int, width: int, height: int) -> None:
        """One short call (2 steps) of ``images`` images drawn at ``width``×``height``."""
        self._call(tuning.probe_arguments(images, width, height, self._accepted,
                                          self.spec.guidance_scale), pipeline)

    def _measure_batch(self, pipeline: Any, device: str) -> int:
        """``max_batch_size = "auto"``: see :func:`.tuning.measure_batch`."""
        return tuning.measure_batch(partial(self._probe_call, pipeline),
                                    self.native_resolution, device, self.spec.name)

    def describe(self) -> dict[str, object]:
        dtype = getattr(self.pipeline, "dtype", None)
        return {
            "device": self.device,
            "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
            "pipeline": type(self.pipeline).__name__ if self.pipeline is not None else None,
            "native_resolution": self.native_resolution,
            "compile": self.spec.compile,
            "runtime": self.runtime,
        }

    def batch_key(self, params: GenerationParams) -> Hashable:
        if params.image is not None:
            return ("edit", id(params))  # every edit has images of its own: one call each
        # Output sizes that draw at the same native size share a call; each image is
        # resized to its own request's size afterwards.
        return (
            self._draw_size(params),
            params.num_inference_steps,
            params.guidance_scale,
            # SDXL encodes an absent negative prompt as zeros, not as "": keep them apart.
            params.negative_prompt is None,
            params.background,
        )

    def count_tokens(self, text: str) -> int:
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        if tokenizer is None:
            return super().count_tokens(text)
        with self._counter_lock:
            if self._counter is None or self._counter[0] is not tokenizer:
                self._counter = (tokenizer, copy.deepcopy(tokenizer))
            # Without truncation: the usage counts what was sent, not what the encoder
            # kept.
            ids = self._counter[1](text, truncation=False,
                                   add_special_tokens=False)["input_ids"]
        return len(ids)

    def _draw_size(self, params: GenerationParams) -> tuple[int, int]:
        return self._draw_size_of(params.width, params.height)

    def _draw_size_of(self, width: int, height: int) -> tuple[int, int]:
        """Where the pipeline draws: its native area in the requested aspect ratio, or
        the requested size itself for pipelines that compose any size on their own."""
        if self._draws_any_size:
            return width, height
        return plan_size(width, height, self.native_resolution, self.size_multiple)

    def generate(
        self, params: GenerationParams, on_step: StepCallback | None = None
    ) -> list[Image.Image]:
        result = self.generate_batch([params], self.max_batch_images or 1, on_step)[0]
        if isinstance(result, EngineError):
            raise result
        return result

    def generate_batch(
        self,
        requests: Sequence[GenerationParams],
        max_images: int,
        on_step: StepCallback | None = None,
    ) -> list[list[Image.Image] | EngineError]:
        if self.pipeline is None:
            raise RuntimeError("generate_batch() before load()")
        with self._lanes.lane() as lane:
            return self._generate_on(lane, requests, max_images, on_step)

    def _generate_on(
        self,
        lane: Lane,
        requests: Sequence[GenerationParams],
        max_images: int,
        on_step: StepCallback | None,
    ) -> list[list[Image.Image] | EngineError]:
        first = requests[0]
        draw_size = self._draw_size(first)
        # 1. One entry per image: whose it is, its prompt, negative prompt and seed.
        entries = ImageEntries.of(requests)
        report = on_step if "callback_on_step_end" in self._accepted else None
        images: list[Image.Image | None] = []
        for chunk in entries.chunks(max_images):
            # 2. One call per chunk, each image from a generator of its own seed.
            kwargs = entries.arguments(chunk, draw_size, self._accepted)
            if report is not None:
                kwargs["callback_on_step_end"] = step_callback(
                    report, requests, entries.owners, chunk.start, first.num_inference_steps)
            pipeline = lane.pipeline
            if first.image is not None:
                pipeline = edit_arguments(lane, kwargs, first, len(entries.seeds[chunk]),
                                          draw_size, accepted=self._accepted,
                                          model=self.spec.name)
            images.extend(self._call(kwargs, pipeline))
        # 3. Back to the requests, each image at exactly its request's size.
        return entries.results(images)

    def _call(self, kwargs: dict[str, Any], pipeline: Any = None) -> list[Image.Image | None]:
        """One pipeline call (:func:`.calling.call_pipeline`).

        With CUDA graphs, on the model's graph thread: inductor keeps the graphs it
        records per thread, and the warm-up at load runs on the loading thread, requests
        on the device's; on one thread, the graphs recorded at load serve the requests."""
        if self._graph_thread is not None:
            return self._graph_thread.submit(self._call_here, kwargs, pipeline).result()
        return self._call_here(kwargs, pipeline)

    def _call_here(self, kwargs: dict[str, Any],
                   pipeline: Any = None) -> list[Image.Image | None]:
        return call_pipeline(pipeline or self.pipeline, self._scheduler, kwargs)

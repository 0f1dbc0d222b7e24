"""DiffusersBackend: one diffusers pipeline served below the engine's queue."""

from __future__ import annotations

import copy
import gc
import inspect
import logging
import threading
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from typing import Any

from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.config.models import GENERIC_GUIDANCE_SCALE
from diffuserve.engine.adapters import AdapterLibrary
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.backends.diffusers import tuning
from diffuserve.engine.backends.diffusers.adapters import LoadedAdapters, takes_adapters
from diffuserve.engine.backends.diffusers.calling import (
    ImageEntries,
    call_pipeline,
    graph_thread,
)
from diffuserve.engine.backends.diffusers.edits import choose_editor, edit_inputs
from diffuserve.engine.backends.diffusers.families import (
    Editor,
    Family,
    Route,
    accepted_by,
    family_of,
)
from diffuserve.engine.backends.diffusers.hotswap import HotswapSlot
from diffuserve.engine.backends.diffusers.lanes import Lane, Lanes, open_lanes
from diffuserve.engine.backends.diffusers.loading import (
    load_pipeline,
    native_resolution,
    pick_device,
)
from diffuserve.engine.backends.diffusers.memory import weight_bytes
from diffuserve.engine.backends.diffusers.offloading import place
from diffuserve.engine.backends.diffusers.previews import Previews
from diffuserve.engine.backends.diffusers.step_cache import PROBE_STEPS, StepCache
from diffuserve.engine.errors import EngineError, ModelLoadFailed, UnsupportedTask
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
        #: What differs for the loaded pipeline's model family (generic until loaded).
        self.family = Family()
        self._previews = Previews(spec.name, self.family)
        #: The arguments the loaded pipeline's ``__call__`` takes.
        self._accepted: frozenset[str] = frozenset()
        #: The edit a model that does not generate warms up with (its own pipeline's).
        self._probe_editor: Editor | None = None
        #: The loaded pipeline's editors by route (each lane has copies of its own): what
        #: :meth:`check` refuses by.
        self._editors: dict[Route, Editor] = {}
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
        #: The model's LoRA adapters by name, and those loaded into its weights (None:
        #: the loaded pipeline takes none, or its denoiser does not run in PyTorch).
        self._library = AdapterLibrary(spec)
        self._adapters: LoadedAdapters | None = None
        #: Why a request's adapters are refused, when they are.
        self._no_adapters = "LoRA adapters (it has none configured)"
        #: The step cache on the denoiser (``cache``), reset around every call.
        self._step_cache: StepCache | None = None
        #: What the loaded weights hold in memory (measured once, at load).
        self._weight_bytes: int | None = None

    @property
    def loaded(self) -> bool:
        return self.pipeline is not None

    #: Unloading drops every reference the backend holds to the pipeline.
    unloads = True

    def load(self) -> None:
        device = pick_device(self.spec.device)
        self._finish_load(load_pipeline(self.spec, device), device)

    def unload(self) -> None:
        """Drop the pipeline, its lanes, editors and adapters; the memory goes back
        once the collector has run (and, on CUDA, the allocator's cache is emptied)."""
        device = self.device
        if self._graph_thread is not None:
            self._graph_thread.shutdown(wait=True)
        self.pipeline = None
        self._lanes = Lanes()
        self._editors = {}
        self._probe_editor = None
        self._adapters = None
        self._step_cache = None
        self._scheduler = None
        self._graph_thread = None
        with self._counter_lock:
            self._counter = None
        self._weight_bytes = None
        self.device = "unloaded"
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    @property
    def weight_bytes(self) -> int | None:
        return self._weight_bytes if self.pipeline is not None else None

    @property
    def dtype(self) -> str | None:
        dtype = getattr(self.pipeline, "dtype", None)
        return str(dtype).removeprefix("torch.") if dtype is not None else None

    @property
    def quantize(self) -> str | None:
        return self.spec.quantize

    def _finish_load(self, pipeline: Any, device: str) -> None:
        import torch

        spec = self.spec
        pipeline = place(pipeline, spec, device)  # on the device, or offloaded
        pipeline.set_progress_bar_config(disable=not self.show_progress, leave=self.show_progress)
        self._accepted = frozenset(inspect.signature(pipeline.__call__).parameters)
        if "prompt" not in self._accepted or "generator" not in self._accepted:
            raise ModelLoadFailed(
                f"Could not load model {spec.name!r} from {spec.source!r}: "
                f"{type(pipeline).__name__} is not a text-to-image pipeline."
            )
        family = self.family = family_of(pipeline)
        self._previews = Previews(spec.name, family)
        vae_scale = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
        self.size_multiple = max(8, vae_scale * 2)
        if spec.resolution is None:
            self.native_resolution = (family.native_resolution(pipeline, vae_scale)
                                      or native_resolution(pipeline, vae_scale))
        self._scheduler = pipeline.scheduler
        self._draws_any_size = bool(getattr(pipeline, "draws_any_size", False))
        # A pipeline that takes `background` draws transparent backgrounds itself.
        self.features = (frozenset({TRANSPARENT_BACKGROUND}) if "background" in self._accepted
                         else frozenset())
        editors = self._editors = family.editors(pipeline)
        self.tasks = family.tasks(editors)
        self.defaults = family.defaults(pipeline)
        # A model that does not generate warms up and measures with an edit it does.
        self._probe_editor = (None if family.generates else
                              choose_editor(editors, self._probe_params(1, 64, 64), spec.name))
        self.max_input_images = max((editor.max_images for editor in editors.values()),
                                    default=1)
        try:
            self.max_prompt_tokens = family.prompt_window(pipeline)
        except Exception as exc:  # a checkpoint laid out unlike its family's: no limit
            self.max_prompt_tokens = None
            logger.warning("prompt window unknown", extra={"fields": {
                "model": spec.name, "error": f"{type(exc).__name__}: {exc}"}})
        self.device = device
        torch.set_grad_enabled(False)
        self._step_cache = StepCache.open(pipeline, spec)
        self.max_batch_images = spec.max_batch_size if spec.max_batch_size != "auto" \
            else self._measure_batch(pipeline, device)
        self._graph_thread = graph_thread(spec)
        slot: tuple[HotswapSlot | None, str] = (None, "")
        if spec.compile != "off":
            # Adapters of a compiled model go through a hotswap slot compiled in with it.
            adapters = bool(self._library) and takes_adapters(pipeline)
            if adapters:
                slot = HotswapSlot.open(pipeline, self._library, spec.max_adapter_rank)
            tuning.compile_and_warm(
                pipeline, spec, device, native_resolution=self.native_resolution,
                drawn_at=self._draw_size_of, max_images=self.max_batch_images or 1,
                probe=partial(self._probe_call, pipeline), adapters=adapters)
        if spec.runtime == "onnx":
            self.runtime = tuning.use_onnx(pipeline, spec, device)
        side = self.native_resolution
        # A load again starts afresh.
        self._lanes = open_lanes(spec, device, Lane(pipeline, editors),
                                 warm=lambda twin: self._probe_call(twin, 1, side, side))
        self.workers = self._lanes.count
        self._check_options(pipeline)
        self._adapters = self._open_adapters(pipeline, *slot)
        # Refused in check() with the reason instead, where the model has adapters.
        self.takes_adapters = self._adapters is not None or bool(self._library)
        self._weight_bytes = weight_bytes(pipeline)
        self.pipeline = pipeline  # loaded (and ready) only now
        # The token counter's own tokenizer is copied now (25 ms for the built-in
        # model's), not by the first request: short prompts are counted on the event loop.
        self.count_tokens("")
        logger.info("model loaded", extra={"fields": {"model": spec.name, **self.describe()}})

    def _open_adapters(self, pipeline: Any, slot: HotswapSlot | None = None,
                       slot_note: str = "") -> LoadedAdapters | None:
        """The adapter cache over the loaded weights, where the model has adapters and
        its pipeline can take them (the lanes share the weights, so one cache serves
        them all); on a compiled model, with its hotswap ``slot`` (``slot_note``: how
        it was shaped, or why there is none)."""
        spec = self.spec
        if not self._library:
            return None
        if not takes_adapters(pipeline):
            self._no_adapters = f"LoRA adapters ({type(pipeline).__name__} takes none)"
        elif self.runtime != "torch":
            self._no_adapters = "LoRA adapters (its denoiser runs on ONNX Runtime)"
        else:
            if spec.compile != "off" and slot is not None:
                logger.info("adapters hotswapped on a compiled model", extra={"fields": {
                    "model": spec.name, "slot": slot_note,
                    "max_adapter_rank": spec.max_adapter_rank,
                    "how": "one adapter at a time, or none, swaps in without recompiling; "
                    "a set of several recompiles the denoiser at its first call"}})
            elif spec.compile != "off":
                # peft's layers go into the compiled modules: a new set of adapters
                # changes the graph, which recompiles at its first call.
                logger.warning("adapters on a compiled model", extra={"fields": {
                    "model": spec.name, "why": f"no hotswap slot: {slot_note}; so each "
                    "new set of adapters recompiles the denoiser at its first call"}})
            return LoadedAdapters(pipeline, self._library, spec.max_loaded_adapters, slot)
        logger.warning("adapters not served", extra={"fields": {
            "model": spec.name, "why": self._no_adapters}})
        return None

    def _probe_call(self, pipeline: Any, images: int, width: int, height: int,
                    steps: int = 2, guidance_scale: float | None = None) -> None:
        """One short call (2 steps) of ``images`` images drawn at ``width``×``height``
        (an edit of a blank image for a model that does not generate)."""
        editor = (replace(self._probe_editor, pipeline=pipeline)
                  if self._probe_editor is not None else None)
        probe = self._probe_params(images, width, height, steps, guidance_scale)
        self._draw(pipeline, editor, [probe], (width, height), images, None)

    def _probe_params(self, images: int, width: int, height: int, steps: int = 2,
                      guidance_scale: float | None = None) -> GenerationParams:
        return GenerationParams(
            prompt="warm-up", negative_prompt=None, width=width, height=height,
            num_inference_steps=steps,
            guidance_scale=self._guidance_scale if guidance_scale is None else guidance_scale,
            seeds=(0,) * images, **self.family.probe_edit(width, height))

    def _check_options(self, pipeline: Any) -> None:
        """With quantised weights, offload or a step cache: one small drawing at load
        (long enough for the cache to reuse what it kept; at a guidance of at least 4,
        so that a pipeline with classifier-free guidance runs both its branches), so
        that an option the device or the denoiser cannot run is refused now, in one
        line, and not by the first request."""
        spec = self.spec
        options = {name: value for name, value in (
            ("quantize", spec.quantize), ("transformer", spec.transformer),
            ("offload", spec.offload), ("cache", spec.cache)) if value is not None}
        if not options:
            return
        side = self.size_multiple * 4
        try:
            self._probe_call(pipeline, 1, side, side,
                             PROBE_STEPS if spec.cache is not None else 2,
                             max(self._guidance_scale, 4.0))
        except Exception as exc:  # one line, whatever the option broke
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            settings = ", ".join(f"{name} = {value!r}" for name, value in options.items())
            raise ModelLoadFailed(
                f"Model {spec.name!r} does not draw with {settings} on {self.device} "
                f"({type(exc).__name__}: {detail}); remove the option or choose "
                "another.") from exc

    @property
    def _guidance_scale(self) -> float:
        """The guidance the model is drawn with unless a request says otherwise."""
        if self.spec.guidance_scale is not None:
            return self.spec.guidance_scale
        return (self.defaults.guidance_scale if self.defaults is not None
                else GENERIC_GUIDANCE_SCALE)

    def _measure_batch(self, pipeline: Any, device: str) -> int:
        """``max_batch_size = "auto"``: see :func:`.tuning.measure_batch`."""
        return tuning.measure_batch(partial(self._probe_call, pipeline),
                                    self.native_resolution, device, self.spec.name)

    def describe(self) -> dict[str, object]:
        return {
            "device": self.device,
            "dtype": self.dtype,
            "weight_bytes": self.weight_bytes,
            "pipeline": type(self.pipeline).__name__ if self.pipeline is not None else None,
            "native_resolution": self.native_resolution,
            "compile": self.spec.compile,
            "offload": self.spec.offload,
            "cache": self.spec.cache,
            "runtime": self.runtime,
            **self.family.describe(),
            "defaults": (None if self.defaults is None else
                         {"steps": self.defaults.steps,
                          "guidance_scale": self.defaults.guidance_scale}),
            "tasks": sorted(kind.value for kind in self.tasks),
            "max_input_images": self.max_input_images,
            "max_prompt_tokens": self.max_prompt_tokens,
            "adapters": (None if self._adapters is None else
                         {"loaded": self._adapters.loaded(),
                          "max_loaded": self._adapters.capacity,
                          "hotswap": self._adapters.slot is not None}),
        }

    def check(self, params: GenerationParams) -> None:
        """The task refused before it is queued as :meth:`generate_batch` would refuse
        it: a generation by a model that only edits, an edit no editor of the model
        draws (without a mask for one that only inpaints, more images than that kind of
        edit takes), a request's negative prompt the pipeline would not use."""
        if params.image is None and not self.family.generates:
            raise UnsupportedTask(self.spec.name, f"{TaskKind.GENERATE} tasks")
        if params.lora:
            self._check_adapters(params.lora)
        editor = (choose_editor(self._editors, params, self.spec.name)
                  if params.image is not None else None)
        # The models file's own negative prompt is the server's choice (dropped with a
        # log line where unused); a request's is refused rather than silently ignored.
        if params.negative_prompt is not None \
                and params.negative_prompt != self.spec.negative_prompt:
            unused = self.family.negative_prompt_unused(
                editor.pipeline if editor is not None else self.pipeline,
                params.guidance_scale)
            if unused is not None:
                raise UnsupportedTask(self.spec.name, f"a negative prompt ({unused})",
                                      field="negative_prompt")

    def _check_adapters(self, lora: tuple[tuple[str, float], ...]) -> None:
        if self._adapters is None:
            raise UnsupportedTask(self.spec.name, self._no_adapters, field="lora")
        if len(lora) > self._adapters.capacity:
            raise UnsupportedTask(
                self.spec.name, f"more than {self._adapters.capacity} adapters at once "
                "(its max_loaded_adapters)", field="lora")

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
            # One call draws with one set of adapters.
            params.lora,
        )

    def count_tokens(self, text: str) -> int:
        tokenizer = self.family.counting_tokenizer(self.pipeline)
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
        with self._lanes.lane() as lane, (
                self._adapters.using(requests[0].lora) if self._adapters is not None
                else nullcontext()):
            return self._generate_on(lane, requests, max_images, on_step)

    def _generate_on(
        self,
        lane: Lane,
        requests: Sequence[GenerationParams],
        max_images: int,
        on_step: StepCallback | None,
    ) -> list[list[Image.Image] | EngineError]:
        first = requests[0]
        if first.image is None and not self.family.generates:
            raise UnsupportedTask(self.spec.name, f"{TaskKind.GENERATE} tasks")
        # 1. Which pipeline draws: the lane's own, or the editor the edit needs.
        editor = (choose_editor(lane.editors, first, self.spec.name)
                  if first.image is not None else None)
        unused = self.family.negative_prompt_unused(
            editor.pipeline if editor is not None else lane.pipeline, first.guidance_scale)
        if unused is not None:
            for params in requests:
                if params.negative_prompt is not None:
                    logger.info("negative prompt not used", extra={"fields": {
                        "model": self.spec.name, "reason": unused}})
        # 2. The calls; 3. back to the requests, each image at exactly its request's size.
        entries, images = self._draw(lane.pipeline, editor, requests,
                                     self._draw_size(first), max_images, on_step)
        return entries.results(images)

    def _draw(self, pipeline: Any, editor: Editor | None,
              requests: Sequence[GenerationParams], draw_size: tuple[int, int],
              max_images: int, on_step: StepCallback | None,
              ) -> tuple[ImageEntries, list[Image.Image | None]]:
        """The images of ``requests`` (compatible: equal batch keys) drawn at
        ``draw_size`` by ``pipeline`` or, for an edit, by ``editor``: one entry per image
        (whose it is, its prompt, negative prompt and seed), drawn in calls of at most
        ``max_images`` (and of the editor's limit), each image from a generator of its
        own seed."""
        first = requests[0]
        caller = editor.pipeline if editor is not None else pipeline
        if editor is not None and editor.max_batch is not None:
            max_images = min(max_images, editor.max_batch)
        accepted = accepted_by(caller)
        report = on_step if accepted is None or "callback_on_step_end" in accepted else None
        entries = ImageEntries.of(requests)
        images: list[Image.Image | None] = []
        for chunk in entries.chunks(max_images):
            kwargs = entries.arguments(chunk, draw_size, self.family, caller)
            if report is not None:
                kwargs["callback_on_step_end"] = self._previews.callback(
                    report, requests, entries.owners, chunk.start,
                    first.num_inference_steps, draw_size)
            if editor is not None:
                kwargs.update(edit_inputs(self.family, editor, first,
                                          len(entries.seeds[chunk]), draw_size))
            images.extend(self._call(kwargs, caller))
        return entries, images

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
        caller = pipeline or self.pipeline
        # A step cache's state is fresh for every call.
        with (self._step_cache.around(caller) if self._step_cache is not None
              else nullcontext()):
            return call_pipeline(caller, self._scheduler, kwargs)

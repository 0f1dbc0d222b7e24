"""Any Hugging Face diffusers text-to-image pipeline, from the Hub or a local folder."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.errors import (
    ContentFlagged,
    EngineError,
    ModelLoadFailed,
    OutOfMemory,
    UnsupportedTask,
)
from diffuserve.engine.resolution import fit_to_size, plan_size
from diffuserve.engine.types import (
    TRANSPARENT_BACKGROUND,
    GenerationParams,
    StepCallback,
    TaskKind,
)

logger = logging.getLogger(__name__)

#: The most images per call ``max_batch_size = "auto"`` chooses.
MAX_AUTO_BATCH = 64

#: ``compile`` modes whose compiled code records CUDA graphs (on a GPU).
GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})


def pick_device(requested: str) -> str:
    """CUDA, then Apple's MPS, then the CPU, unless the configuration names one."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str) -> Any:
    """Half precision on accelerators, float32 on the CPU (half is slow or unsupported)."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    return torch.float32 if device == "cpu" else torch.float16


#: Pipeline classes of this project, by the ``_class_name`` of a folder's model_index.json.
PROJECT_PIPELINES = {"EmojiPipeline": "diffuserve.builtin.pipeline"}


def _project_pipeline(source: str) -> Any:
    """The project's own pipeline class a local folder names, if it names one."""
    index = Path(source) / "model_index.json"
    if not index.is_file():
        return None
    class_name = json.loads(index.read_text()).get("_class_name")
    module = PROJECT_PIPELINES.get(class_name)
    return getattr(importlib.import_module(module), class_name) if module else None


def _looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.path.isdir(source)


def _load_error(spec: ModelSpec, exc: BaseException) -> ModelLoadFailed:
    """One paragraph that tells a person what is wrong and what to do."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = f"model {spec.name!r} from {spec.source!r}"
    if _looks_local(spec.source):
        folder = Path(spec.source).expanduser()
        if not folder.is_dir():
            advice = "that folder does not exist. Check the path in the model's `source`."
        elif not (folder / "model_index.json").is_file():
            advice = (
                "that folder is not a diffusers pipeline (it has no model_index.json). "
                "Point `source` at a folder written by `pipeline.save_pretrained()` or a "
                "downloaded Hub snapshot."
            )
        else:
            advice = (
                f"the pipeline in that folder could not be read ({type(exc).__name__}: {detail})."
            )
    elif os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        advice = (
            "HF_HUB_OFFLINE is set and the weights are not in the local Hugging Face cache. "
            f"Download them once with network access (`hf download {spec.source}`), point "
            "`source` at a local folder, or unset HF_HUB_OFFLINE."
        )
    else:
        advice = (
            "the weights could not be downloaded from the Hugging Face Hub "
            f"({type(exc).__name__}: {detail}). Check the model id and your network, log in "
            "with `hf auth login` for gated models, or point `source` at a local folder."
        )
    return ModelLoadFailed(f"Could not load {where}: {advice}")


def _use_threads(count: int) -> None:
    """PyTorch's CPU threads for this thread's work from now on. A thread's first use
    of PyTorch sets its count to the one set last on any thread, so that use comes
    first here, and the count set next is the one kept."""
    import torch

    torch.get_num_threads()
    torch.set_num_threads(count)


@dataclass
class Lane:
    """What one pipeline call at a time uses: the pipeline and its edit variants. A
    diffusers pipeline keeps a call's state on itself (its scheduler, guidance scale…),
    so calls that run at once (``workers``) each take a lane of their own; the lanes
    share the weights."""

    pipeline: Any
    editors: dict[str, Any] = field(default_factory=dict)


class DiffusersBackend(Backend):
    """Serves one diffusers pipeline: one call at a time, or up to ``workers`` at once on
    a CPU, each with a :class:`Lane` of its own."""

    def __init__(self, spec: ModelSpec, *, show_progress: bool = False) -> None:
        self.spec = spec
        self.show_progress = show_progress
        self.device = "unloaded"
        self.pipeline: Any = None
        self.native_resolution = spec.resolution or 512
        self.size_multiple = 8
        self._accepted: frozenset[str] = frozenset()
        self._scheduler: Any = None
        self._draws_any_size = False
        self._editors: dict[str, Any] = {}
        #: What runs the denoiser: "torch", or "onnx" (ONNX Runtime, ``runtime = "onnx"``).
        self.runtime = "torch"
        #: The tokenizer that counts prompts for ``usage``: a copy of the pipeline's, used
        #: by one thread at a time. A fast tokenizer keeps its padding and truncation
        #: settings between calls, so counting with the pipeline's own while a pipeline
        #: call encodes its prompts changed how that call padded them.
        self._counter: tuple[Any, Any] | None = None
        self._counter_lock = threading.Lock()
        #: The one thread every pipeline call runs on when the model records CUDA graphs
        #: (see :data:`GRAPH_MODES`); None otherwise.
        self._graph_thread: ThreadPoolExecutor | None = None
        #: Lanes not in use; a call takes one and gives it back.
        self._lanes: queue.SimpleQueue[Lane] = queue.SimpleQueue()
        #: Calls under way, and the CPU threads a call alone (all) or beside others (its
        #: share) runs on; see :meth:`_enter`.
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._threads = 1
        self._shared_threads = 1

    @property
    def loaded(self) -> bool:
        return self.pipeline is not None

    def load(self) -> None:
        device = pick_device(self.spec.device)
        dtype = pick_dtype(self.spec.dtype, device)
        source = str(Path(self.spec.source).expanduser()) if _looks_local(self.spec.source) \
            else self.spec.source
        kwargs: dict[str, Any] = {"dtype": dtype}
        if self.spec.revision:
            kwargs["revision"] = self.spec.revision
        if self.spec.variant:
            kwargs["variant"] = self.spec.variant
        try:
            own_class = _project_pipeline(source) if _looks_local(source) else None
            if own_class is not None:
                pipeline = own_class.from_pretrained(source, **kwargs)
            else:
                pipeline = self._load_diffusers(source, kwargs)
        except Exception as exc:  # every failure becomes one readable paragraph
            raise _load_error(self.spec, exc) from exc
        self._finish_load(pipeline, device)

    @staticmethod
    def _load_diffusers(source: str, kwargs: dict[str, Any]) -> Any:
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline

        try:
            return AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
                source, **kwargs
            )
        except ValueError as exc:
            # AutoPipeline knows only the families it maps; any other text-to-image
            # pipeline still loads through its own class named in model_index.json.
            if "AutoPipeline" not in str(exc) and "can't find a pipeline" not in str(exc):
                raise
            return DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
                source, **kwargs
            )

    def _finish_load(self, pipeline: Any, device: str) -> None:
        import torch

        pipeline = pipeline.to(device)
        pipeline.set_progress_bar_config(disable=not self.show_progress, leave=self.show_progress)
        self._accepted = frozenset(inspect.signature(pipeline.__call__).parameters)
        if "prompt" not in self._accepted or "generator" not in self._accepted:
            raise ModelLoadFailed(
                f"Could not load model {self.spec.name!r} from {self.spec.source!r}: "
                f"{type(pipeline).__name__} is not a text-to-image pipeline."
            )
        vae_scale = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
        self.size_multiple = max(8, vae_scale * 2)
        if self.spec.resolution is None:
            self.native_resolution = self._native_resolution(pipeline, vae_scale)
        self._scheduler = pipeline.scheduler
        self._draws_any_size = bool(getattr(pipeline, "draws_any_size", False))
        # A pipeline that takes `background` draws transparent backgrounds itself.
        self.features = (frozenset({TRANSPARENT_BACKGROUND}) if "background" in self._accepted
                         else frozenset())
        self._editors = self._edit_pipelines(pipeline)
        if self._editors or "image" in self._accepted:
            self.tasks = frozenset({TaskKind.GENERATE, TaskKind.EDIT, TaskKind.VARIATION})
        self.device = device
        torch.set_grad_enabled(False)
        self.max_batch_images = self.spec.max_batch_size if self.spec.max_batch_size != "auto" \
            else self._measure_batch(pipeline, device)
        if self.spec.compile in GRAPH_MODES:
            self._graph_thread = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"diffuserve-graphs-{self.spec.name}")
        if self.spec.compile != "off":
            self._compile(pipeline, device)
        if self.spec.runtime == "onnx":
            self._use_onnx(pipeline, device)
        self._make_lanes(pipeline, device)
        self.pipeline = pipeline  # loaded (and ready) only now
        # The token counter's own tokenizer is copied now (25 ms for the built-in
        # model's), not by the first request: short prompts are counted on the event loop.
        self.count_tokens("")
        logger.info("model loaded", extra={"fields": {"model": self.spec.name, **self.describe()}})

    def _probe_call(self, pipeline: Any, images: int, width: int, height: int) -> None:
        """One short call (2 steps) of ``images`` images drawn at ``width``×``height``."""
        import torch

        kwargs: dict[str, Any] = {
            "prompt": ["warm-up"] * images, "height": height, "width": width,
            "num_inference_steps": 2, "output_type": "pil",
            "generator": [torch.Generator().manual_seed(0) for _ in range(images)]}
        if "guidance_scale" in self._accepted:
            kwargs["guidance_scale"] = self.spec.guidance_scale
        self._call(kwargs, pipeline)

    def _measure_batch(self, pipeline: Any, device: str) -> int:
        """``max_batch_size = "auto"``: the images per call for this model on this device.

        On CUDA, as many as the free memory holds at the native size, from the peak
        memory of a call of one image and of two (the second image's share is what each
        more costs), with 20 % kept free. Elsewhere, where memory is not the limit but
        compute is, the batch after which a bigger one stops saving 10 % per image."""
        import torch

        side = self.native_resolution
        started = time.perf_counter()
        if device == "cuda":
            baseline = torch.cuda.memory_allocated()  # the weights
            peaks = []
            for images in (1, 2):
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                self._probe_call(pipeline, images, side, side)
                torch.cuda.synchronize()
                peaks.append(torch.cuda.max_memory_allocated())
            per_image = max(peaks[1] - peaks[0], 1)
            fixed = max(0, peaks[0] - baseline - per_image)  # a call's cost whatever its size
            free, _ = torch.cuda.mem_get_info()
            chosen = max(1, min(MAX_AUTO_BATCH, int(0.8 * free - fixed) // per_image))
            how: dict[str, object] = {"per_image_bytes": per_image, "free_bytes": free}
        else:
            self._probe_call(pipeline, 1, side, side)  # warm: the first call is slow
            chosen, best, seconds = 1, float("inf"), {}
            for images in (1, 2, 4, 8, 16):
                begun = time.perf_counter()
                self._probe_call(pipeline, images, side, side)
                cost = (time.perf_counter() - begun) / images
                seconds[images] = round(cost, 4)
                if cost > 0.9 * best:
                    break
                chosen, best = images, cost
            how = {"seconds_per_image": seconds}
        logger.info("batch size measured", extra={"fields": {
            "model": self.spec.name, "max_batch_images": chosen, **how,
            "seconds": round(time.perf_counter() - started, 1)}})
        return chosen

    def _use_onnx(self, pipeline: Any, device: str) -> None:
        """Denoise on ONNX Runtime (``runtime = "onnx"``), where the pipeline offers it and
        runs on the CPU."""
        use = getattr(pipeline, "use_onnx_runtime", None)
        if use is None:
            raise ModelLoadFailed(
                f"Model {self.spec.name!r}: {type(pipeline).__name__} cannot run on ONNX "
                'Runtime (runtime = "onnx"); remove the setting to run it on PyTorch.')
        started = time.monotonic()
        try:
            self.runtime = "onnx" if use() else "torch"
        except Exception as exc:  # an accelerator that fails must not stop the model
            self.runtime = "torch"
            logger.warning("ONNX Runtime failed: the denoiser runs on PyTorch", exc_info=exc,
                           extra={"fields": {"model": self.spec.name,
                                             "error": f"{type(exc).__name__}: {exc}"}})
        logger.info("denoiser runtime", extra={"fields": {
            "model": self.spec.name, "runtime": self.runtime, "device": device,
            "seconds": round(time.monotonic() - started, 1)}})

    def _make_lanes(self, pipeline: Any, device: str) -> None:
        """One lane per worker (``workers``; on a CPU only), each warmed on its share of
        the cores, so that neither PyTorch nor ONNX Runtime sets up for a thread count in
        front of a request."""
        import torch

        self._threads = torch.get_num_threads()
        workers = self.spec.workers
        if workers > 1 and device != "cpu":
            logger.warning("workers apply on a CPU: this model runs one call at a time",
                           extra={"fields": {"model": self.spec.name, "device": device,
                                             "workers": workers}})
            workers = 1
        self.workers = workers
        self._shared_threads = max(1, self._threads // workers)
        lanes = [Lane(pipeline, self._editors)]
        for _ in range(workers - 1):
            twin = copy.copy(pipeline)
            # A fast tokenizer is not safe to use from two threads at once (its padding
            # settings change per call): each lane encodes with a copy of its own.
            for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
                if getattr(pipeline, name, None) is not None:
                    setattr(twin, name, copy.deepcopy(getattr(pipeline, name)))
            lanes.append(Lane(twin, self._edit_pipelines(twin)))
        if workers > 1:
            started = time.perf_counter()
            side = self.native_resolution
            with ThreadPoolExecutor(max_workers=1) as warmer:
                warmer.submit(self._warm_shared, lanes[1].pipeline, side).result()
            logger.info("workers ready", extra={"fields": {
                "model": self.spec.name, "workers": workers, "threads_alone": self._threads,
                "threads_side_by_side": self._shared_threads,
                "seconds": round(time.perf_counter() - started, 1)}})
        self._lanes = queue.SimpleQueue()  # a load again starts afresh
        for lane in lanes:
            self._lanes.put(lane)

    def _warm_shared(self, pipeline: Any, side: int) -> None:
        _use_threads(self._shared_threads)
        try:
            self._probe_call(pipeline, 1, side, side)
        finally:
            _use_threads(self._threads)

    def _enter(self) -> None:
        """A call begins on this thread: with every thread when no other call of this
        model runs, else with its share, so that calls side by side do not oversubscribe
        the cores (a call alone keeps its latency)."""
        with self._busy_lock:
            self._busy += 1
            alone = self._busy == 1
        _use_threads(self._threads if alone else self._shared_threads)

    def _leave(self) -> None:
        with self._busy_lock:
            self._busy -= 1
        # The count set last is also what new threads start with: all of them.
        _use_threads(self._threads)

    def _compile(self, pipeline: Any, device: str) -> None:
        """Compile, then draw every size to be warmed at every batch size up to a full
        batch, so that compilation happens now and not in front of a request.

        Two batch sizes are not enough: torch.compile generalises over the batch size
        from the second one it sees, but the traced graph keeps guards on it wherever the
        code branched on it — the convolutions' backend, chosen by batch size (on a CPU
        it changes at 16 of the UNet's doubled batch), or diffusers' upsampling past 64 —
        and a batch outside a graph's guards is compiled again when it comes. Every batch
        size drawn once compiles each such range now (a few graphs) and, with CUDA
        graphs, records each size's graph now too."""

        from diffuserve.engine.backends.compilation import compile_cache_dir, compile_pipeline

        started = time.perf_counter()
        compiled = compile_pipeline(pipeline, self.spec.compile, device)
        sizes = [tuple(int(side) for side in size.split("x"))
                 for size in self.spec.compile_sizes] \
            or [(self.native_resolution, self.native_resolution)]
        drawn = sorted({self._draw_size_of(width, height) for width, height in sizes})
        batch_sizes = list(range(1, (self.max_batch_images or 1) + 1))
        for width, height in drawn:
            for images in batch_sizes:
                self._probe_call(pipeline, images, width, height)
        logger.info("model compiled", extra={"fields": {
            "model": self.spec.name, "mode": self.spec.compile, "compiled": compiled,
            "warmed": [f"{width}x{height}" for width, height in drawn],
            "batch_sizes": batch_sizes,
            "seconds": round(time.perf_counter() - started, 1),
            "cache": str(compile_cache_dir())}})

    @staticmethod
    def _edit_pipelines(pipeline: Any) -> dict[str, Any]:
        """Image-to-image and inpainting variants sharing the loaded weights (diffusers'
        ``from_pipe``), for the families diffusers maps; none for pipelines that edit
        themselves (they take ``image``) or that no variant exists for."""
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        if "image" in inspect.signature(pipeline.__call__).parameters:
            return {}
        editors: dict[str, Any] = {}
        for kind, auto in (("image", AutoPipelineForImage2Image),
                           ("inpaint", AutoPipelineForInpainting)):
            try:
                editor = auto.from_pipe(pipeline)
            except Exception:  # this family has no such variant
                logger.debug("no %s variant for %s", kind, type(pipeline).__name__)
                continue
            editor.set_progress_bar_config(disable=True)
            editors[kind] = editor
        return editors

    @staticmethod
    def _native_resolution(pipeline: Any, vae_scale: int) -> int:
        sample = getattr(pipeline, "default_sample_size", None)
        if sample is None:
            denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
            sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
        if isinstance(sample, (list, tuple)):
            sample = sample[0]
        if not isinstance(sample, int) or sample <= 0:
            return 512
        return int(sample) * vae_scale

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
        lane = self._lanes.get()
        self._enter()
        try:
            return self._generate_on(lane, requests, max_images, on_step)
        finally:
            self._leave()
            self._lanes.put(lane)

    def _generate_on(
        self,
        lane: Lane,
        requests: Sequence[GenerationParams],
        max_images: int,
        on_step: StepCallback | None,
    ) -> list[list[Image.Image] | EngineError]:
        import torch

        first = requests[0]
        gen_w, gen_h = self._draw_size(first)
        # 1. One entry per image: whose it is, its prompt, negative prompt and seed.
        owners = [index for index, params in enumerate(requests) for _ in params.seeds]
        prompts = [params.prompt for params in requests for _ in params.seeds]
        negatives = [params.negative_prompt or "" for params in requests for _ in params.seeds]
        seeds = [seed for params in requests for seed in params.seeds]
        use_negative = first.negative_prompt is not None and "negative_prompt" in self._accepted

        step_end = None
        chunk_start = [0]
        if on_step is not None and "callback_on_step_end" in self._accepted:
            total = first.num_inference_steps

            def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
                latents = tensors.get("latents")

                def preview(index: int) -> Image.Image | None:
                    local = index - chunk_start[0]
                    if latents is None or not 0 <= local < latents.shape[0]:
                        return None
                    params = requests[owners[index]]
                    return self._preview(pipe, latents, local, params)

                on_step(step + 1, total, preview)
                return tensors

        images: list[Image.Image | None] = []
        for start in range(0, len(seeds), max_images):
            chunk_start[0] = start
            chunk = slice(start, start + max_images)
            kwargs: dict[str, Any] = {
                "prompt": prompts[chunk],
                "height": gen_h,
                "width": gen_w,
                "num_inference_steps": first.num_inference_steps,
                # 2. One CPU generator per image: an image depends only on its own seed,
                #    on every device, whatever else shares the batch.
                "generator": [torch.Generator(device="cpu").manual_seed(s) for s in seeds[chunk]],
                "output_type": "pil",
            }
            if "guidance_scale" in self._accepted:
                kwargs["guidance_scale"] = first.guidance_scale
            if use_negative:
                kwargs["negative_prompt"] = negatives[chunk]
            if first.background == "transparent":
                kwargs["background"] = "transparent"
            if step_end is not None:
                kwargs["callback_on_step_end"] = step_end
            pipeline = lane.pipeline
            if first.image is not None:
                pipeline = self._edit_arguments(lane, kwargs, first, len(seeds[chunk]),
                                                (gen_w, gen_h))
            images.extend(self._call(kwargs, pipeline))

        # 3. Back to the requests, each image at exactly its request's size; a request
        #    with an image the pipeline's safety checker flagged is refused, alone.
        results: list[list[Image.Image] | EngineError] = [[] for _ in requests]
        for owner, image in zip(owners, images, strict=True):
            params = requests[owner]
            kept = results[owner]
            if image is None:
                results[owner] = ContentFlagged()
            elif isinstance(kept, list):
                kept.append(fit_to_size(image, params.width, params.height))
        return results

    def _preview(self, pipe: Any, latents: Any, index: int,
                 params: GenerationParams) -> Image.Image | None:
        """Image ``index`` of the call as it stands: the scheduler's prediction of the
        clean latents where it keeps one (DPM-Solver++), else the current latents,
        decoded at the request's size. Best effort: a pipeline whose latents this cannot
        decode gives no preview rather than a failed request."""
        import torch

        try:
            scheduler = pipe.scheduler
            outputs = getattr(scheduler, "model_outputs", None)
            predicts_clean = "dpmsolver++" in str(getattr(scheduler.config, "algorithm_type", ""))
            clean = outputs[-1] if predicts_clean and outputs and outputs[-1] is not None \
                else None
            source = clean if clean is not None and clean.shape == latents.shape else latents
            one = source[index:index + 1]
            with torch.inference_mode():
                decode = getattr(pipe, "decode_preview", None)
                if decode is not None:
                    image: Image.Image = decode(one, params.width, params.height,
                                                params.background)
                    return image
                vae = pipe.vae
                decoded = vae.decode(one.to(vae.dtype) / vae.config.scaling_factor,
                                     return_dict=False)[0]
                pil = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
            return fit_to_size(pil, params.width, params.height)
        except Exception:  # a preview is an extra; the image itself must not fail
            logger.debug("no preview for this pipeline", exc_info=True)
            return None

    def _edit_arguments(self, lane: Lane, kwargs: dict[str, Any], params: GenerationParams,
                        count: int, draw_size: tuple[int, int]) -> Any:
        """Turn ``kwargs`` into an edit of ``params.image`` (inpainting with its mask);
        returns the pipeline of ``lane`` that draws it."""
        assert params.image is not None
        if "image" in self._accepted:  # the pipeline edits itself, at its own scale
            pipeline = lane.pipeline
            kwargs["image"] = [params.image] * count
            if params.mask is not None:
                kwargs["mask_image"] = [params.mask] * count
        else:
            kind = "inpaint" if params.mask is not None else "image"
            if kind not in lane.editors:
                raise UnsupportedTask(self.spec.name, "edits with masks" if kind == "inpaint"
                                      else "image to image")
            pipeline = lane.editors[kind]
            accepted = inspect.signature(pipeline.__call__).parameters
            kwargs["image"] = [fit_to_size(params.image, *draw_size)] * count
            if params.mask is not None:
                kwargs["mask_image"] = [fit_to_size(params.mask.convert("RGB"),
                                                    *draw_size).convert("L")] * count
            for name in ("height", "width"):
                if name not in accepted:
                    kwargs.pop(name, None)
        kwargs["strength"] = params.strength
        return pipeline

    def _call(self, kwargs: dict[str, Any], pipeline: Any = None) -> list[Image.Image | None]:
        """One pipeline call with a scheduler of its own (diffusers schedulers keep state).

        Images the pipeline's safety checker flagged come back as ``None``. With CUDA
        graphs, on the model's graph thread: inductor keeps the graphs it records per
        thread, and the warm-up at load runs on the loading thread, requests on the
        device's; on one thread, the graphs recorded at load serve the requests."""
        if self._graph_thread is not None:
            return self._graph_thread.submit(self._call_here, kwargs, pipeline).result()
        return self._call_here(kwargs, pipeline)

    def _call_here(self, kwargs: dict[str, Any],
                   pipeline: Any = None) -> list[Image.Image | None]:
        import torch

        pipeline = pipeline or self.pipeline
        pipeline.scheduler = copy.deepcopy(self._scheduler)
        try:
            with torch.inference_mode():
                output = pipeline(**kwargs)
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(str(exc).splitlines()[0]) from exc
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc):
                raise OutOfMemory(str(exc).splitlines()[0]) from exc
            raise
        flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(output.images)
        return [None if flag else image for image, flag in zip(output.images, flagged,
                                                                strict=True)]

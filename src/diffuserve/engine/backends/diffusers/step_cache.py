"""Step caching (``cache``): diffusers' cache hooks on a transformer denoiser, which skip
work from one denoising step to the next and reuse what they kept.

- ``first-block:<threshold>``: First Block Cache — where the first block's output changed
  by less than ``threshold`` (relative) since the last step, the other blocks are skipped
  and their last residual reused;
- ``taylorseer``: TaylorSeer — the attention layers' outputs are computed on the first 3
  steps and every 5th after, and predicted in between from their Taylor expansion
  (diffusers' defaults);
- ``faster``: FasterCache's attention reuse — every other step, below timestep 681, each
  attention layer's output is extrapolated from its last two instead of computed (the
  guidance branch is left alone: no family served batches it the way FasterCache skips it).
  Its hooks keep one state whatever the cache context, so a pipeline that runs the
  denoiser twice a step, each branch in a context of its own (Qwen-Image's true CFG,
  klein base's CFG), would mix the branches' outputs: such a call is refused, and so the
  model at load where its own guidance runs so.

The hooks keep their state on the denoiser's modules, so:

- every pipeline call starts and ends with the state reset (:meth:`StepCache.around`):
  diffusers resets it at the end of a call that completes, and a call cut short
  (cancelled, failed) must not hand its state to the next;
- a model with a cache runs one call at a time (the models file refuses ``workers`` above
  1 with it): the lanes would share the denoiser, and its state;
- the hooks need the call's "cache context": pipelines that name none themselves (FLUX's
  image-to-image, inpainting, Fill and Kontext pipelines, FLUX.2) get one for the whole
  call. Those run the denoiser once per step; the pipelines that run it twice (true CFG)
  name a context per branch themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from diffuserve.config import ModelSpec
from diffuserve.config.options import StepCache as Choice
from diffuserve.config.options import parse_cache
from diffuserve.engine.errors import ModelLoadFailed

logger = logging.getLogger(__name__)

#: FasterCache's weight of the last attention output's trend (diffusers' default, set
#: here so that it does not warn about choosing it).
FASTER_CACHE_ATTENTION_WEIGHT = 0.5

#: Steps a probe at load runs with a cache on: enough for each cache to reuse what it
#: kept at least once (TaylorSeer predicts from the 4th; FasterCache below timestep 681).
PROBE_STEPS = 8


class StepCache:
    """The step cache on a loaded pipeline's transformer, and what each call does with
    it."""

    def __init__(self, denoiser: Any, choice: Choice) -> None:
        self.denoiser = denoiser
        self.choice = choice
        #: The pipeline whose call is under way (FasterCache asks it the timestep).
        self._active: Any = None
        #: The cache contexts the call under way named (FasterCache: one at most).
        self._contexts: set[str] = set()

    @classmethod
    def open(cls, pipeline: Any, spec: ModelSpec) -> StepCache | None:
        """The cache ``spec.cache`` names, on ``pipeline``'s transformer (None without
        one); refused in one line for a pipeline without a transformer that takes
        diffusers' caches."""
        if spec.cache is None:
            return None
        choice = parse_cache(spec.cache)
        denoiser = getattr(pipeline, "transformer", None)
        if denoiser is None:
            unet = getattr(pipeline, "unet", None)
            what = (f"'s denoiser is a UNet ({type(unet).__name__})" if unet is not None
                    else " has no transformer")
            raise refused(spec, f"applies to transformer models, and "
                                f"{type(pipeline).__name__}{what}")
        if not hasattr(denoiser, "enable_cache"):
            raise refused(spec, f"needs a denoiser that takes diffusers' step caches, and "
                                f"{type(denoiser).__name__} takes none")
        cache = cls(denoiser, choice)
        if choice.kind == "faster":
            cache._one_branch_a_step()
        try:
            denoiser.enable_cache(cache._config())
        except Exception as exc:  # one line, whatever the hooks raised
            raise refused(spec, f"could not be set on {type(denoiser).__name__} "
                                f"({type(exc).__name__}: {_first_line(exc)})") from exc
        logger.info("step cache on", extra={"fields": {
            "model": spec.name, "cache": spec.cache, "denoiser": type(denoiser).__name__}})
        return cache

    def _config(self) -> Any:
        from diffusers.hooks.faster_cache import FasterCacheConfig
        from diffusers.hooks.first_block_cache import FirstBlockCacheConfig
        from diffusers.hooks.taylorseer_cache import TaylorSeerCacheConfig

        if self.choice.kind == "first-block":
            assert self.choice.threshold is not None
            return FirstBlockCacheConfig(threshold=self.choice.threshold)
        if self.choice.kind == "taylorseer":
            return TaylorSeerCacheConfig()
        return FasterCacheConfig(
            current_timestep_callback=self._timestep, is_guidance_distilled=True,
            attention_weight_callback=lambda _module: FASTER_CACHE_ATTENTION_WEIGHT)

    def _one_branch_a_step(self) -> None:
        """Refuse, as the pipeline names a second cache context in one call, a call that
        runs the denoiser's branches apart (FasterCache's state would mix them)."""
        named = self.denoiser.cache_context

        @contextmanager
        def cache_context(name: str, **kwargs: Any) -> Iterator[None]:
            self._contexts.add(name)
            if len(self._contexts) > 1:
                raise ValueError(
                    f"{type(self._active).__name__} runs the denoiser once per guidance "
                    f"branch ({', '.join(sorted(self._contexts))}), and FasterCache keeps one "
                    "state for both")
            with named(name, **kwargs):
                yield

        self.denoiser.cache_context = cache_context

    def _timestep(self) -> int:
        """The timestep of the step under way (0–1000, whole), for FasterCache: what the
        pipeline says where it says, else its scheduler's next timestep."""
        pipeline = self._active
        current = getattr(pipeline, "_current_timestep", None)
        if current is None:
            scheduler = pipeline.scheduler
            index = scheduler.step_index
            if index is None:
                index = getattr(scheduler, "begin_index", None) or 0
            current = scheduler.timesteps[min(index, len(scheduler.timesteps) - 1)]
        return int(current)

    @contextmanager
    def around(self, pipeline: Any) -> Iterator[None]:
        """One call of ``pipeline`` with the cache's state fresh, in one cache context
        where the pipeline names none."""
        self._active = pipeline
        self.denoiser._reset_stateful_cache()
        try:
            with self.denoiser.cache_context("call"):
                self._contexts.clear()  # the pipeline's own, from here
                yield
        finally:
            self.denoiser._reset_stateful_cache()
            self._contexts.clear()
            self._active = None


def refused(spec: ModelSpec, why: str) -> ModelLoadFailed:
    return ModelLoadFailed(f"Model {spec.name!r}: cache = {spec.cache!r} {why}; remove "
                           "cache, or choose another.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""

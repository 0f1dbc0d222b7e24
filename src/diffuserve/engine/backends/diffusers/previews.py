"""Partial images while a call draws: diffusers' ``callback_on_step_end`` reports each
step, and offers any image of the call as it stands, decoded the way its family's
pipeline decodes its final latents (:meth:`.families.Family.decode_latents`) and sized
as its request."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from diffuserve.engine.backends.diffusers.families import Family
from diffuserve.engine.resolution import fit_to_size
from diffuserve.engine.types import GenerationParams, StepCallback

logger = logging.getLogger(__name__)


class Previews:
    """The partial images of one model's calls. A preview is an extra: one that cannot
    be decoded is missing rather than a failed request, and the first failure is a
    warning (later ones are logged at debug level)."""

    def __init__(self, model: str, family: Family) -> None:
        self.model = model
        self.family = family
        self._warned = False
        self._lock = threading.Lock()

    def callback(self, on_step: StepCallback, requests: Sequence[GenerationParams],
                 owners: Sequence[int], first: int, total: int,
                 draw_size: tuple[int, int]) -> Callable[..., Any]:
        """``callback_on_step_end`` for a call drawing at about ``draw_size`` whose
        images are entries ``first`` on of a batch (``owners[i]``: the request of entry
        ``i``): each step goes to ``on_step`` with a preview of any entry the call
        draws."""
        seen: dict[str, Any] = {}

        def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            latents = tensors.get("latents")
            previous = seen.get("latents")

            def preview(index: int) -> Image.Image | None:
                local = index - first
                if latents is None or not 0 <= local < latents.shape[0]:
                    return None
                return self.image(pipe, latents, local, requests[owners[index]],
                                  draw_size, previous=previous)

            on_step(step + 1, total, preview)
            if latents is not None and flow_matching(pipe.scheduler):
                # The next step's preview estimates the clean image from these latents.
                seen["latents"] = latents.detach().clone()
            return tensors

        return step_end

    def image(self, pipe: Any, latents: Any, index: int, params: GenerationParams,
              draw_size: tuple[int, int], *, previous: Any = None) -> Image.Image | None:
        """Image ``index`` of the call as it stands (the clean image as the scheduler
        predicts it where it can tell, else the current latents), at the request's
        size; None where it cannot be decoded."""
        import torch

        try:
            source = clean_estimate(pipe.scheduler, latents, previous)
            one = source[index:index + 1]
            with torch.inference_mode():
                decode = getattr(pipe, "decode_preview", None)
                if decode is not None:
                    # Which image of the call it is, where the pipeline frames each its
                    # own way (the built-in model, seed by seed).
                    which = ({"index": index}
                             if "index" in inspect.signature(decode).parameters else {})
                    image: Image.Image = decode(one, params.width, params.height,
                                                params.background, **which)
                    return image
                decoded = self.family.decode_latents(pipe, one, draw_size)
                pil = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
            return fit_to_size(pil, params.width, params.height)
        except Exception as exc:  # a preview is an extra; the image itself must not fail
            self._failed(pipe, exc)
            return None

    def _failed(self, pipe: Any, exc: Exception) -> None:
        with self._lock:
            first, self._warned = not self._warned, True
        if first:
            logger.warning("partial images cannot be decoded for this model: streams "
                           "carry none", exc_info=exc, extra={"fields": {
                               "model": self.model, "pipeline": type(pipe).__name__,
                               "family": self.family.name,
                               "error": f"{type(exc).__name__}: {exc}"}})
        else:
            logger.debug("no preview", exc_info=exc)


def clean_estimate(scheduler: Any, latents: Any, previous: Any) -> Any:
    """The clean latents as the scheduler's last step predicted them, where it can tell:
    DPM-Solver++ keeps its prediction; a deterministic flow-matching Euler step moved
    the latents from ``previous`` along the predicted velocity, so the clean latents lie
    further along that line (at sigma 0). Else ``latents`` themselves."""
    outputs = getattr(scheduler, "model_outputs", None)
    if "dpmsolver++" in str(getattr(scheduler.config, "algorithm_type", "")) and outputs \
            and outputs[-1] is not None and outputs[-1].shape == latents.shape:
        return outputs[-1]
    sigmas = getattr(scheduler, "sigmas", None)
    step = getattr(scheduler, "step_index", None)
    if (previous is None or previous.shape != latents.shape or sigmas is None
            or step is None or not 0 < step < len(sigmas) or not flow_matching(scheduler)):
        return latents
    sigma, before = float(sigmas[step]), float(sigmas[step - 1])
    if before == sigma:
        return latents
    velocity = (latents - previous) / (sigma - before)
    return latents - sigma * velocity


def flow_matching(scheduler: Any) -> bool:
    """Whether ``scheduler`` takes deterministic flow-matching Euler steps (FLUX, SD 3.5,
    Qwen-Image, Z-Image), whose clean latents :func:`clean_estimate` can tell."""
    return (type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
            and not getattr(scheduler.config, "stochastic_sampling", False))

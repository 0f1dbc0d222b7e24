"""Partial images while a call draws: diffusers' ``callback_on_step_end`` reports each
step, and offers any image of the call as it stands, decoded at its request's size."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from diffuserve.engine.resolution import fit_to_size
from diffuserve.engine.types import GenerationParams, StepCallback

logger = logging.getLogger(__name__)


def step_callback(on_step: StepCallback, requests: Sequence[GenerationParams],
                  owners: Sequence[int], first: int, total: int) -> Callable[..., Any]:
    """``callback_on_step_end`` for a call whose images are entries ``first`` on of a
    batch (``owners[i]``: the request of entry ``i``): each step goes to ``on_step``
    with a preview of any entry the call draws."""

    def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
        latents = tensors.get("latents")

        def preview(index: int) -> Image.Image | None:
            local = index - first
            if latents is None or not 0 <= local < latents.shape[0]:
                return None
            return preview_image(pipe, latents, local, requests[owners[index]])

        on_step(step + 1, total, preview)
        return tensors

    return step_end


def preview_image(pipe: Any, latents: Any, index: int,
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

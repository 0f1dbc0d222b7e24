"""Edits and variations: a pipeline that takes ``image`` edits itself; any other edits
through the image-to-image and inpainting variants diffusers builds over its weights."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from diffuserve.engine.errors import UnsupportedTask
from diffuserve.engine.resolution import fit_to_size
from diffuserve.engine.types import GenerationParams

if TYPE_CHECKING:
    from diffuserve.engine.backends.diffusers.lanes import Lane

logger = logging.getLogger(__name__)


def edit_pipelines(pipeline: Any) -> dict[str, Any]:
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


def edit_arguments(lane: Lane, kwargs: dict[str, Any], params: GenerationParams, count: int,
                   draw_size: tuple[int, int], *, accepted: frozenset[str],
                   model: str) -> Any:
    """Turn ``kwargs`` into an edit of ``params.image`` (inpainting with its mask) for
    ``count`` images drawn at ``draw_size``; returns the pipeline of ``lane`` that draws
    it. ``accepted``: what the lane's pipeline's ``__call__`` takes."""
    assert params.image is not None
    if "image" in accepted:  # the pipeline edits itself, at its own scale
        pipeline = lane.pipeline
        kwargs["image"] = [params.image] * count
        if params.mask is not None:
            kwargs["mask_image"] = [params.mask] * count
    else:
        kind = "inpaint" if params.mask is not None else "image"
        if kind not in lane.editors:
            raise UnsupportedTask(model, "edits with masks" if kind == "inpaint"
                                  else "image to image")
        pipeline = lane.editors[kind]
        editor_accepts = inspect.signature(pipeline.__call__).parameters
        kwargs["image"] = [fit_to_size(params.image, *draw_size)] * count
        if params.mask is not None:
            kwargs["mask_image"] = [fit_to_size(params.mask.convert("RGB"),
                                                *draw_size).convert("L")] * count
        for name in ("height", "width"):
            if name not in editor_accepts:
                kwargs.pop(name, None)
    kwargs["strength"] = params.strength
    return pipeline

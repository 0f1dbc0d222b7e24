"""Pipeline calls: compatible requests become one entry per image, drawn in calls of at
most a batch, and the images go back to their requests, each at its request's size."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.diffusers.families import Family, accepted_by
from diffuserve.engine.errors import ContentFlagged, EngineError, OutOfMemory
from diffuserve.engine.resolution import fit_to_size
from diffuserve.engine.types import GenerationParams

logger = logging.getLogger(__name__)

#: ``compile`` modes whose compiled code records CUDA graphs (on a GPU).
GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})


def graph_thread(spec: ModelSpec) -> ThreadPoolExecutor | None:
    """The one thread every call of the model runs on when it records CUDA graphs
    (inductor keeps the graphs it records per thread); None otherwise."""
    if spec.compile not in GRAPH_MODES:
        return None
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"diffuserve-graphs-{spec.name}")


@dataclass(frozen=True)
class ImageEntries:
    """One entry per image of requests drawn together: whose it is (``owners``, an index
    into ``requests``), its prompt, negative prompt and seed."""

    requests: Sequence[GenerationParams]
    owners: list[int]
    prompts: list[str]
    negatives: list[str]
    seeds: list[int]

    @classmethod
    def of(cls, requests: Sequence[GenerationParams]) -> ImageEntries:
        return cls(
            requests=requests,
            owners=[index for index, params in enumerate(requests) for _ in params.seeds],
            prompts=[params.prompt for params in requests for _ in params.seeds],
            negatives=[params.negative_prompt or "" for params in requests
                       for _ in params.seeds],
            seeds=[seed for params in requests for seed in params.seeds],
        )

    def chunks(self, max_images: int) -> list[slice]:
        """The entries of each call, at most ``max_images`` in one."""
        return [slice(start, start + max_images)
                for start in range(0, len(self.seeds), max_images)]

    def arguments(self, chunk: slice, draw_size: tuple[int, int], family: Family,
                  pipeline: Any) -> dict[str, Any]:
        """The text-to-image arguments of the call of ``pipeline`` drawing ``chunk`` at
        ``draw_size``, with ``family``'s own (guidance, negative prompts…); the requests
        share their settings (they have equal batch keys)."""
        import torch

        first = self.requests[0]
        width, height = draw_size
        seeds = self.seeds[chunk]
        kwargs: dict[str, Any] = {
            # A list of its own: a pipeline may rewrite its prompts in place (Z-Image).
            "prompt": list(self.prompts[chunk]),
            "height": height,
            "width": width,
            "num_inference_steps": first.num_inference_steps,
            # One CPU generator per image: an image depends only on its own seed, on
            # every device, whatever else shares the batch.
            "generator": [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
            "output_type": "pil",
        }
        negatives = (list(self.negatives[chunk]) if first.negative_prompt is not None
                     else None)
        kwargs.update(family.call_arguments(pipeline, first.guidance_scale, negatives,
                                            len(seeds), draw_size))
        if first.background == "transparent":
            kwargs["background"] = "transparent"
        return kwargs

    def results(
        self, images: Sequence[Image.Image | None]
    ) -> list[list[Image.Image] | EngineError]:
        """The images back to their requests, each at exactly its request's size; a
        request with an image the pipeline's safety checker flagged (None) is refused,
        alone."""
        results: list[list[Image.Image] | EngineError] = [[] for _ in self.requests]
        for owner, image in zip(self.owners, images, strict=True):
            params = self.requests[owner]
            kept = results[owner]
            if image is None:
                results[owner] = ContentFlagged()
            elif isinstance(kept, list):
                kept.append(fit_to_size(image, params.width, params.height))
        return results


def accepted_arguments(pipeline: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` less what ``pipeline.__call__`` does not take: the one place every
    call's arguments pass (a family sets what its pipelines may take; an edit variant or
    a checkpoint of the family may take less)."""
    accepted = accepted_by(pipeline)
    if accepted is None:
        return kwargs
    dropped = [name for name in kwargs if name not in accepted]
    if dropped:
        logger.debug("arguments not taken by %s: %s", type(pipeline).__name__, dropped)
    return {name: value for name, value in kwargs.items() if name in accepted}


def call_pipeline(
    pipeline: Any, scheduler: Any, kwargs: dict[str, Any]
) -> list[Image.Image | None]:
    """One call of ``pipeline`` with a copy of ``scheduler`` of its own (diffusers
    schedulers keep state) and the arguments of ``kwargs`` it takes; images the safety
    checker flagged come back as None, a device out of memory as
    :class:`~diffuserve.engine.errors.OutOfMemory`."""
    import torch

    kwargs = accepted_arguments(pipeline, kwargs)
    pipeline.scheduler = copy.deepcopy(scheduler)
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
    return [None if flag else image for image, flag in zip(output.images, flagged, strict=True)]

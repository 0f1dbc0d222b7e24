"""Planning: a request becomes exactly what will be drawn, before anything is admitted.

Pure: it resolves the model (an omitted one is the catalog's default), applies OpenAI's
rules for the requested name, fills in defaults, decides ``size=auto``
(:func:`drawn_size`), turns ``quality`` and ``style`` into steps and guidance (the one
place a model's knobs become generation parameters), picks seeds and revises the
prompt. It raises only client errors.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from diffuserve.config import ModelSpec
from diffuserve.config.models import GENERIC_GUIDANCE_SCALE, GENERIC_STEPS
from diffuserve.engine.types import GenerationParams, ModelDefaults, TaskKind
from diffuserve.protocol.edits import (
    EditRequest,
    PendingEdit,
    VariationRequest,
    too_many_images,
)
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.rules import (
    MAX_SEED,
    ValidatedRequest,
    rules_for,
)
from diffuserve.protocol.sizes import Size
from diffuserve.protocol.uploads import ProbedImage
from diffuserve.service.adapters import chosen_adapters
from diffuserve.service.catalog import ModelCatalog
from diffuserve.service.prompting import revise_prompt
from diffuserve.service.usage import input_image_tokens

#: gpt-image quality levels as fractions of the model's standard step count.
_QUALITY_STEP_FACTORS = {"low": 0.5, "medium": 1.0, "auto": 1.0}
#: ``quality`` values that ask for the model's ``hd_steps``, and by how much more.
_HD_FACTORS = {"hd": 1.0, "high": 1.0, "xhigh": 1.25, "max": 1.5}
#: ``complexity`` ("computation spent planning the image") as denoising effort.
COMPLEXITY_FACTORS = {"low": 0.75, "medium": 1.0, "high": 1.25}
#: The quality a response reports for what was asked (never ``auto``).
RESOLVED_QUALITY = {"auto": "medium", "standard": "medium", "hd": "high"}


def standard_steps(spec: ModelSpec, defaults: ModelDefaults | None = None) -> int:
    """Steps at standard quality: the spec's ``steps``, else the model's own
    (``defaults``, as the engine reports them), else the generic 30."""
    if spec.steps is not None:
        return spec.steps
    return defaults.steps if defaults is not None else GENERIC_STEPS


def hd_steps(spec: ModelSpec, defaults: ModelDefaults | None = None) -> int:
    """Steps for ``quality=hd``: the spec's ``hd_steps``; else, where the spec sets no
    ``steps``, the model's own; else 1.6 × :func:`standard_steps`."""
    if spec.hd_steps is not None:
        return spec.hd_steps
    if spec.steps is None and defaults is not None and defaults.hd_steps is not None:
        return defaults.hd_steps
    steps = standard_steps(spec, defaults)
    return max(steps + 1, round(steps * 1.6))


def steps_for(spec: ModelSpec, quality: str, complexity: str | None = None,
              defaults: ModelDefaults | None = None) -> int:
    """Denoising steps: the model's standard or hd steps (the spec's, else its own
    ``defaults``) scaled by ``quality``, then by ``complexity``, never below the model's
    ``min_steps`` (fewer draw noise)."""
    if quality in _HD_FACTORS:
        base = hd_steps(spec, defaults) * _HD_FACTORS[quality]
    else:
        base = standard_steps(spec, defaults) * _QUALITY_STEP_FACTORS.get(quality, 1.0)
    steps = round(base * COMPLEXITY_FACTORS.get(complexity or "medium", 1.0))
    return max(1, spec.min_steps or 1, steps)


def guidance_for(spec: ModelSpec, style: str | None,
                 defaults: ModelDefaults | None = None) -> float:
    """Guidance: the spec's scale for ``style`` where it has one, else its
    ``guidance_scale``, else the model's own (``defaults``), else the generic 7.5."""
    if style == "vivid" and spec.vivid_guidance_scale is not None:
        return spec.vivid_guidance_scale
    if style == "natural" and spec.natural_guidance_scale is not None:
        return spec.natural_guidance_scale
    if spec.guidance_scale is not None:
        return spec.guidance_scale
    return defaults.guidance_scale if defaults is not None else GENERIC_GUIDANCE_SCALE


@dataclass(frozen=True)
class GenerationPlan:
    """What will be drawn for one valid request."""

    spec: ModelSpec
    request: ValidatedRequest
    params: GenerationParams
    revised_prompt: str | None
    kind: TaskKind = TaskKind.GENERATE
    #: Tokens of the uploaded images, for ``usage``.
    input_image_tokens: int = 0
    #: An edit's or a variation's images as uploaded: its content credentials'
    #: ingredients.
    inputs: tuple[ProbedImage, ...] = ()

    @property
    def images(self) -> int:
        return self.params.n

    @property
    def size(self) -> Size:
        """The size drawn (never ``auto``)."""
        return Size(self.params.width, self.params.height)

    @property
    def resolved_quality(self) -> str:
        return RESOLVED_QUALITY.get(self.request.quality, self.request.quality)

    @property
    def prompt(self) -> str:
        """The prompt drawn (dall-e-3's revised one), for the content policy."""
        return self.params.prompt


@dataclass(frozen=True)
class RemoteEdit:
    """An edit planned as far as it can be before its remote images are fetched (work
    that costs the server something outside it): admitted as it stands, then fetched
    and planned (:meth:`~diffuserve.service.images.ImageService.fetch`)."""

    pending: PendingEdit

    @property
    def request(self) -> ValidatedRequest:
        return self.pending.request

    @property
    def images(self) -> int:
        return self.request.n

    @property
    def prompt(self) -> str:
        return self.request.prompt


#: What planning gives: a plan to draw, or an edit to fetch once admitted.
Plan = GenerationPlan | RemoteEdit


def plan_generation(catalog: ModelCatalog, body: ImageGenerationRequest,
                    defaults: ModelDefaults | None = None) -> GenerationPlan:
    """Resolve, validate and fill in defaults (``defaults``: the model's own steps and
    guidance, as the engine reports them); raises before any compute."""
    name = catalog.requested_name(body.model)
    spec = catalog.resolve(name)
    req = rules_for(name).validate(body, name)

    revised = (
        revise_prompt(req.prompt, req.style, styled=spec.prompt_revision == "styled")
        if req.revise_prompt else None
    )
    params = _params(spec, req, revised if revised is not None else req.prompt,
                     drawn_size(req), defaults, lora=_lora(catalog, spec, req))
    return GenerationPlan(spec=spec, request=req, params=params, revised_prompt=revised)


def _params(spec: ModelSpec, req: ValidatedRequest, prompt: str, size: Size,
            defaults: ModelDefaults | None, **edit: Any) -> GenerationParams:
    """The model's knobs applied to a valid request."""
    steps = (req.num_inference_steps if req.num_inference_steps is not None
             else steps_for(spec, req.quality, req.options.complexity, defaults))
    guidance = (req.guidance_scale if req.guidance_scale is not None
                else guidance_for(spec, req.style, defaults))
    first_seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED - req.n + 2)
    return GenerationParams(
        prompt=prompt,
        negative_prompt=req.negative_prompt or spec.negative_prompt,
        width=size.width,
        height=size.height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seeds=tuple(first_seed + i for i in range(req.n)),
        background="transparent" if req.options.background == "transparent" else "opaque",
        **edit,
    )


def _lora(catalog: ModelCatalog, spec: ModelSpec, req: ValidatedRequest
          ) -> tuple[tuple[str, float], ...]:
    """The adapters ``spec`` draws the request with (its own, then the request's)."""
    if not spec.lora and not req.lora:
        return ()
    return chosen_adapters(spec, catalog.adapters(spec), req.lora)


#: How far an edit may go from its image (diffusers' ``strength``): inpainting redraws
#: the masked area from scratch (1.0) or, at high fidelity, from the image's layout; an
#: edit without a mask keeps more of the image at high fidelity.
EDIT_STRENGTH = {("low", True): 1.0, ("high", True): 0.85,
                 ("low", False): 0.75, ("high", False): 0.5}
#: A variation keeps the image's composition and redraws its details.
VARIATION_STRENGTH = 0.6


def check_edit_images(catalog: ModelCatalog, request: ValidatedRequest, images: int,
                      limit: int | None) -> ModelSpec:
    """The model that draws an edit, if it takes ``images`` images (``limit``: as many
    as it takes, as the engine reports it; None: not known yet, the engine refuses at
    submit); checked before any image is fetched or decoded."""
    spec = catalog.resolve_edit(request.model)
    if limit is not None and images > limit:
        raise too_many_images(spec.name, limit, images)
    return spec


def plan_edit(catalog: ModelCatalog, edit: EditRequest,
              defaults: ModelDefaults | None = None) -> GenerationPlan:
    """An edit of the images by the model that draws the name's edits: the first image
    where the mask says (or all of it), the others as references (OpenAI's rule: the
    mask applies to the first image)."""
    req = edit.request
    spec = catalog.resolve_edit(req.model)
    first, *references = edit.images
    params = _params(spec, req, req.prompt, drawn_size(req, edit.input_size), defaults,
                     lora=_lora(catalog, spec, req), image=first, mask=edit.mask,
                     references=tuple(references),
                     strength=EDIT_STRENGTH[(edit.input_fidelity, edit.mask is not None)])
    # Every image sent is read, and counted, as OpenAI counts them.
    tokens = sum(input_image_tokens(image.width, image.height, edit.input_fidelity)
                 for image in edit.images)
    return GenerationPlan(spec=spec, request=req, params=params, revised_prompt=None,
                          kind=TaskKind.EDIT, input_image_tokens=tokens)


def plan_variation(catalog: ModelCatalog, variation: VariationRequest,
                   defaults: ModelDefaults | None = None) -> GenerationPlan:
    """Variations of the image: drawn again from it without a prompt."""
    req = variation.request
    spec = catalog.resolve_edit(req.model)
    params = _params(spec, req, "", drawn_size(req, variation.image.size), defaults,
                     lora=_lora(catalog, spec, req), image=variation.image,
                     strength=VARIATION_STRENGTH)
    return GenerationPlan(spec=spec, request=req, params=params, revised_prompt=None,
                          kind=TaskKind.VARIATION)


#: What ``size=auto`` draws without an input image (GPT-image's square).
AUTO_DRAWN_SIZE = Size(1024, 1024)


def drawn_size(request: ValidatedRequest, input_size: tuple[int, int] | None = None) -> Size:
    """The size drawn for a valid request, the one place ``size=auto`` is decided: the
    size asked for; for ``auto``, 1024x1024 without an input image, else
    :func:`auto_size` of the input's (upright) size."""
    if not request.size.is_auto:
        return request.size
    return AUTO_DRAWN_SIZE if input_size is None else auto_size(input_size, request.model)


def auto_size(input_size: tuple[int, int], model: str) -> Size:
    """``size=auto`` for an edit: the input's size where the name takes any size (scaled
    into its limits, sides rounded to its multiple), else its supported size nearest in
    shape."""
    width, height = input_size
    rules = rules_for(model)
    limits = rules.free_limits
    if limits is not None:
        scale = min(1.0, limits.max_side / max(width, height),
                    (limits.max_pixels / (width * height)) ** 0.5)
        step = limits.multiple
        low = max(step, limits.min_side)
        w, h = (max(low, round(side * scale / step) * step) for side in (width, height))
        # Rounding up may pass a limit by a step; then round that side down instead.
        while w * h > limits.max_pixels or max(w, h) > limits.max_side:
            w, h = (w - step, h) if w >= h else (w, h - step)
        while max(w, h) > limits.max_ratio * min(w, h):
            w, h = (w - step, h) if w > h else (w, h - step)
        return Size(w, h)
    named = [size for size in map(Size.parse, rules.sizes)
             if size is not None and not size.is_auto]
    return min(named, key=lambda s: abs(math.log((s.width / s.height) / (width / height))))

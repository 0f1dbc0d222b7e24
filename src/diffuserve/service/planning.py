"""Planning: a request becomes exactly what will be drawn, before anything is admitted.

Pure: it resolves the model, applies OpenAI's rules for the requested name, fills in
defaults, turns ``quality`` and ``style`` into steps and guidance (the one place a
model's knobs become generation parameters), picks seeds and revises the prompt. It
raises only client errors.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from diffuserve.config import ModelSpec
from diffuserve.engine.types import GenerationParams
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.rules import MAX_SEED, ValidatedRequest, rules_for
from diffuserve.service.catalog import ModelCatalog
from diffuserve.service.prompting import revise_prompt

#: gpt-image quality levels as fractions of the model's standard step count.
_QUALITY_STEP_FACTORS = {"low": 0.5, "medium": 1.0, "auto": 1.0}
#: ``quality`` values that ask for the model's ``hd_steps``, and by how much more.
_HD_FACTORS = {"hd": 1.0, "high": 1.0, "xhigh": 1.25, "max": 1.5}
#: ``complexity`` ("computation spent planning the image") as denoising effort.
COMPLEXITY_FACTORS = {"low": 0.75, "medium": 1.0, "high": 1.25}
#: The quality a response reports for what was asked (never ``auto``).
RESOLVED_QUALITY = {"auto": "medium", "standard": "medium", "hd": "high"}


def hd_steps(spec: ModelSpec) -> int:
    """Steps for ``quality=hd``: the model's ``hd_steps``, else 1.6 × its ``steps``."""
    return spec.hd_steps if spec.hd_steps is not None else max(spec.steps + 1,
                                                                round(spec.steps * 1.6))


def steps_for(spec: ModelSpec, quality: str, complexity: str | None = None) -> int:
    """Denoising steps: the model's ``steps`` or ``hd_steps`` scaled by ``quality``, then
    by ``complexity``."""
    if quality in _HD_FACTORS:
        base = hd_steps(spec) * _HD_FACTORS[quality]
    else:
        base = spec.steps * _QUALITY_STEP_FACTORS.get(quality, 1.0)
    return max(1, round(base * COMPLEXITY_FACTORS.get(complexity or "medium", 1.0)))


def guidance_for(spec: ModelSpec, style: str | None) -> float:
    if style == "vivid" and spec.vivid_guidance_scale is not None:
        return spec.vivid_guidance_scale
    if style == "natural" and spec.natural_guidance_scale is not None:
        return spec.natural_guidance_scale
    return spec.guidance_scale


@dataclass(frozen=True)
class GenerationPlan:
    """What will be drawn for one valid request."""

    spec: ModelSpec
    request: ValidatedRequest
    params: GenerationParams
    revised_prompt: str | None

    @property
    def images(self) -> int:
        return self.params.n

    @property
    def resolved_quality(self) -> str:
        return RESOLVED_QUALITY.get(self.request.quality, self.request.quality)


def plan_generation(catalog: ModelCatalog, body: ImageGenerationRequest) -> GenerationPlan:
    """Resolve, validate and fill in defaults; raises before any compute."""
    name = body.model if body.model is not None else catalog.request_default()
    spec = catalog.resolve(name)
    req = rules_for(name).validate(body, name)

    revised = (
        revise_prompt(req.prompt, req.style, styled=spec.prompt_revision == "styled")
        if req.revise_prompt else None
    )
    steps = (req.num_inference_steps if req.num_inference_steps is not None
             else steps_for(spec, req.quality, req.options.complexity))
    guidance = (req.guidance_scale if req.guidance_scale is not None
                else guidance_for(spec, req.style))
    first_seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED - req.n + 2)
    params = GenerationParams(
        prompt=revised if revised is not None else req.prompt,
        negative_prompt=req.negative_prompt or spec.negative_prompt,
        width=req.width,
        height=req.height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seeds=tuple(first_seed + i for i in range(req.n)),
        background="transparent" if req.options.background == "transparent" else "opaque",
    )
    return GenerationPlan(spec=spec, request=req, params=params, revised_prompt=revised)

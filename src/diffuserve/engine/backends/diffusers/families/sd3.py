"""Stable Diffusion 3 and 3.5: 4-D latents scaled and shifted by the VAE's factors, real
CFG with a negative prompt, two CLIPs and a T5 whose window is the prompt's."""

from __future__ import annotations

from typing import Any

from diffuserve.engine.backends.diffusers.families.base import (
    Editor,
    Family,
    Route,
    t5_window,
    variant_editors,
)
from diffuserve.engine.types import ModelDefaults

#: As the model cards give them: SD 3.5 Large (and SD 3's MMDiT) 28 steps at 3.5; SD 3.5
#: Medium (MMDiT-X: a transformer with dual attention layers) 40 steps at 4.5.
SD35_LARGE = ModelDefaults(steps=28, guidance_scale=3.5)
SD35_MEDIUM = ModelDefaults(steps=40, guidance_scale=4.5)


class StableDiffusion3(Family):
    """``StableDiffusion3Pipeline``: generation; edits through
    ``StableDiffusion3InpaintPipeline`` (with a mask) and
    ``StableDiffusion3Img2ImgPipeline`` (without). Real CFG with the negative prompt at
    guidance above 1 (3.5 Large Turbo, drawn at 0, needs ``steps = 4`` and
    ``guidance_scale = 0`` in the models file). The prompt's window is T5's at the
    pipeline's ``max_sequence_length`` (256): a longer one would pad every prompt further
    and change every image."""

    name = "sd3"
    negative_prompt_above = 1.0  # CFG runs at guidance_scale above 1

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return variant_editors(pipeline, "StableDiffusion3InpaintPipeline",
                               "StableDiffusion3Img2ImgPipeline")

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        transformer = getattr(pipeline, "transformer", None)
        dual = getattr(getattr(transformer, "config", None), "dual_attention_layers", ())
        return SD35_MEDIUM if dual else SD35_LARGE

    def counting_tokenizer(self, pipeline: Any) -> Any:
        t5 = getattr(pipeline, "tokenizer_3", None)  # None: served without T5
        return t5 if t5 is not None else super().counting_tokenizer(pipeline)

    def prompt_window(self, pipeline: Any) -> int | None:
        t5 = getattr(pipeline, "tokenizer_3", None)
        return t5_window(pipeline, t5) if t5 is not None else None

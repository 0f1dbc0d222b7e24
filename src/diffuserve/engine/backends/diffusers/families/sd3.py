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


class StableDiffusion3(Family):
    """``StableDiffusion3Pipeline``: generation; edits through
    ``StableDiffusion3InpaintPipeline`` (with a mask) and
    ``StableDiffusion3Img2ImgPipeline`` (without). The prompt's window is T5's at the
    pipeline's ``max_sequence_length`` (256): a longer one would pad every prompt further
    and change every image."""

    name = "sd3"

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return variant_editors(pipeline, "StableDiffusion3InpaintPipeline",
                               "StableDiffusion3Img2ImgPipeline")

    def counting_tokenizer(self, pipeline: Any) -> Any:
        t5 = getattr(pipeline, "tokenizer_3", None)  # None: served without T5
        return t5 if t5 is not None else super().counting_tokenizer(pipeline)

    def prompt_window(self, pipeline: Any) -> int | None:
        t5 = getattr(pipeline, "tokenizer_3", None)
        return t5_window(pipeline, t5) if t5 is not None else None

"""Z-Image: 4-D latents scaled and shifted by the VAE's factors, real CFG with a
negative prompt at guidance above 0 (the Turbo model is drawn without: guidance 0), a
chat-templated Qwen3 prompt."""

from __future__ import annotations

from typing import Any

from diffuserve.engine.backends.diffusers.families.base import (
    Editor,
    Family,
    Route,
    chat_window,
    variant_editors,
)
from diffuserve.engine.types import ModelDefaults

#: Z-Image's native side: its pipeline draws 1024² when asked for no size, and its
#: transformer's config gives no sample size to read it from.
Z_IMAGE_NATIVE = 1024
#: Z-Image-Turbo's, as its model card and diffusers' documentation give them: 9 steps (8
#: evaluations of the transformer), no guidance. Z-Image (the undistilled base) loads
#: as the same pipeline and cannot be told apart: set its steps and guidance_scale in
#: the models file.
Z_IMAGE_TURBO = ModelDefaults(steps=9, guidance_scale=0.0, hd_steps=9)


class ZImage(Family):
    """``ZImagePipeline``: generation; edits through ``ZImageInpaintPipeline`` (with a
    mask) and ``ZImageImg2ImgPipeline`` (without)."""

    name = "z-image"
    negative_prompt_above = 0.0  # CFG runs at any guidance_scale above 0

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return variant_editors(pipeline, "ZImageInpaintPipeline", "ZImageImg2ImgPipeline")

    def prompt_window(self, pipeline: Any) -> int | None:
        return chat_window(pipeline, enable_thinking=True)

    def native_resolution(self, pipeline: Any, vae_scale: int) -> int | None:
        return Z_IMAGE_NATIVE

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        return Z_IMAGE_TURBO

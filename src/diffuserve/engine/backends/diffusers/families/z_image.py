"""Z-Image: 4-D latents scaled and shifted by the VAE's factors, real CFG with a
negative prompt (the Turbo model is drawn without: guidance 0 or 1), a chat-templated
Qwen3 prompt."""

from __future__ import annotations

from typing import Any

from diffuserve.engine.backends.diffusers.families.base import (
    Editor,
    Family,
    Route,
    chat_window,
    variant_editors,
)

#: Z-Image's native side: its pipeline draws 1024² when asked for no size, and its
#: transformer's config gives no sample size to read it from.
Z_IMAGE_NATIVE = 1024


class ZImage(Family):
    """``ZImagePipeline``: generation; edits through ``ZImageInpaintPipeline`` (with a
    mask) and ``ZImageImg2ImgPipeline`` (without)."""

    name = "z-image"

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return variant_editors(pipeline, "ZImageInpaintPipeline", "ZImageImg2ImgPipeline")

    def prompt_window(self, pipeline: Any) -> int | None:
        return chat_window(pipeline, enable_thinking=True)

    def native_resolution(self, pipeline: Any, vae_scale: int) -> int | None:
        return Z_IMAGE_NATIVE

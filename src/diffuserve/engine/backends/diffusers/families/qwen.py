"""Qwen-Image, Qwen-Image-Edit and Qwen-Image-Edit-Plus: packed latents of 2×2 latent
pixels, a 3-D (video) VAE whose latents are ``(B, C, 1, H, W)`` normalised by per-channel
``latents_mean``/``latents_std``, true CFG as ``true_cfg_scale``, a Qwen2.5-VL prompt."""

from __future__ import annotations

from typing import Any

from diffuserve.engine.backends.diffusers.families.base import (
    Editor,
    Family,
    Route,
    gray_image,
    packed_grid,
    unpack_2x2,
    variant,
    variant_editors,
)
from diffuserve.engine.types import ModelDefaults

#: ``max_sequence_length`` passed: the most Qwen-Image's pipelines allow. Its prompts
#: are not padded, so a longer limit changes nothing for shorter prompts.
QWEN_MAX_SEQUENCE = 1024
#: Images one Qwen-Image-Edit-Plus edit takes, as its model card says.
EDIT_PLUS_MAX_IMAGES = 3
#: As the model cards give them (the guidance is ``true_cfg_scale``): Qwen-Image and
#: Qwen-Image-Edit 50 steps, Qwen-Image-Edit-2509 (Plus) 40, all at 4.
QWEN_IMAGE = ModelDefaults(steps=50, guidance_scale=4.0)
QWEN_IMAGE_EDIT_PLUS = ModelDefaults(steps=40, guidance_scale=4.0)


class QwenImage(Family):
    """``QwenImagePipeline``: generation; edits through ``QwenImageInpaintPipeline``
    (with a mask) and ``QwenImageImg2ImgPipeline`` (without).

    ``guidance_scale`` is passed as ``true_cfg_scale`` (the pipeline's own
    ``guidance_scale`` is for guidance-distilled checkpoints, which Qwen-Image is not).
    True CFG runs only with a negative prompt: without one, " " is used, as the model
    card does."""

    name = "qwen-image"
    guidance = "true-cfg"
    negative_prompt_above = 1.0  # true CFG runs at a scale above 1

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return variant_editors(pipeline, "QwenImageInpaintPipeline", "QwenImageImg2ImgPipeline")

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        return QWEN_IMAGE

    def call_arguments(self, pipeline: Any, guidance_scale: float,
                       negatives: list[str] | None, count: int,
                       draw_size: tuple[int, int]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"true_cfg_scale": guidance_scale,
                                  "max_sequence_length": QWEN_MAX_SEQUENCE}
        if guidance_scale > 1:
            kwargs["negative_prompt"] = negatives or [" "] * count
        return kwargs

    def prompt_window(self, pipeline: Any) -> int | None:
        """The text encoder reads the prompt inside a template whose first
        ``prompt_template_encode_start_idx`` tokens are dropped, up to
        ``tokenizer_max_length`` tokens after them."""
        tokenizer = getattr(pipeline, "tokenizer", None)
        template = getattr(pipeline, "prompt_template_encode", None)
        if tokenizer is None or template is None:
            return None
        dropped = int(getattr(pipeline, "prompt_template_encode_start_idx", 0))
        limit = min(int(getattr(pipeline, "tokenizer_max_length", QWEN_MAX_SEQUENCE)),
                    QWEN_MAX_SEQUENCE)
        overhead = len(tokenizer(template.format(""))["input_ids"])
        return limit + dropped - overhead

    def decode_latents(self, pipeline: Any, latents: Any, draw_size: tuple[int, int]) -> Any:
        """As ``QwenImagePipeline`` decodes: unpacked to one frame ``(B, C, 1, H, W)``,
        de-normalised per channel, decoded, the frame taken."""
        import torch

        rows, columns = packed_grid(latents.shape[1], *draw_size)
        frames = unpack_2x2(latents, rows, columns).unsqueeze(2)
        vae = pipeline.vae
        frames = frames.to(vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(frames.device, frames.dtype)
        std = torch.tensor(vae.config.latents_std).view(shape).to(frames.device, frames.dtype)
        return vae.decode(frames * std + mean, return_dict=False)[0][:, :, 0]


class QwenImageEdit(QwenImage):
    """``QwenImageEditPipeline``: instruction edits of one image, one prompt a call (it
    takes no batch of prompts over one image); with a mask,
    ``QwenImageEditInpaintPipeline`` (which draws at about 1 MP in the image's aspect,
    whatever size is asked: the images are resized to the request's size after). No
    plain generation: an edit model (pair it with a generating one)."""

    name = "qwen-image-edit"
    generates = False

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        editors = {Route.INSTRUCT: Editor(pipeline, Route.INSTRUCT, max_batch=1)}
        inpaint = variant(pipeline, "QwenImageEditInpaintPipeline")
        if inpaint is not None:
            editors[Route.INPAINT] = Editor(inpaint, Route.INPAINT)
        return editors

    def prompt_window(self, pipeline: Any) -> int | None:
        """The edit pipelines do not truncate (the image's tokens come first, and their
        number depends on its size): the encoder's stated window, as a bound."""
        return int(getattr(pipeline, "tokenizer_max_length", QWEN_MAX_SEQUENCE))

    def probe_edit(self, width: int, height: int) -> dict[str, Any]:
        return {"image": gray_image(width, height)}


class QwenImageEditPlus(QwenImageEdit):
    """``QwenImageEditPlusPipeline`` (Edit-2509 and later): instruction edits of one to
    three images ("Picture 1", "Picture 2"… in the prompt), one prompt a call. No
    inpainting pipeline exists for it: a masked edit is an instruction edit whose
    unmasked pixels the service keeps."""

    name = "qwen-image-edit-plus"

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return {Route.INSTRUCT: Editor(pipeline, Route.INSTRUCT,
                                       max_images=EDIT_PLUS_MAX_IMAGES, max_batch=1)}

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        return QWEN_IMAGE_EDIT_PLUS

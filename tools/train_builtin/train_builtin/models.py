"""The built-in model's architecture: a small KL autoencoder (64 px ↔ 16×16×4 latents)
and a small UNet cross-attending to MiniLM token states, both diffusers classes; and the
patch discriminator its decoders may be trained against (never shipped)."""

from __future__ import annotations

from typing import Any

IMAGE_SIZE = 64
LATENT_SIZE = 16
LATENT_CHANNELS = 4
TEXT_DIM = 384
TRAIN_TIMESTEPS = 1000


def autoencoder_config() -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [32, 64, 128],
        "layers_per_block": 2,
        "latent_channels": LATENT_CHANNELS,
        "norm_num_groups": 8,
        "sample_size": IMAGE_SIZE,
    }


def unet_config() -> dict[str, Any]:
    return {
        "sample_size": LATENT_SIZE,
        "in_channels": LATENT_CHANNELS,
        "out_channels": LATENT_CHANNELS,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [96, 192, 192],
        "layers_per_block": 1,
        "attention_head_dim": 32,
        "cross_attention_dim": TEXT_DIM,
        "norm_num_groups": 32,
    }


def scheduler_config() -> dict[str, Any]:
    return {
        "num_train_timesteps": TRAIN_TIMESTEPS,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
    }


def build_autoencoder() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**autoencoder_config())


def build_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config())


def build_discriminator(in_channels: int = 4, width: int = 32, layers: int = 3) -> Any:
    """A PatchGAN discriminator (the kind latent diffusion's autoencoders are trained
    against): ``layers`` strided 4×4 convolutions, each halving the picture and doubling
    the width, then one logit per patch (46 px patches of a 256 px picture with the
    defaults). Group norms, not batch norms: the batches are small."""
    from torch import nn

    blocks: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
    channels = width
    for _ in range(1, layers):
        blocks += [nn.Conv2d(channels, channels * 2, 4, 2, 1), nn.GroupNorm(8, channels * 2),
                   nn.LeakyReLU(0.2)]
        channels *= 2
    blocks.append(nn.Conv2d(channels, 1, 4, 1, 1))
    return nn.Sequential(*blocks)

"""The whole training run, stage after stage, from a prepared data folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from diffuserve.training.models import IMAGE_SIZE
from diffuserve.training.train import (
    StageConfig,
    encode_latents,
    export,
    finetune_decoder,
    train_autoencoder,
    train_diffusion,
)


def run_training(args: argparse.Namespace) -> Path:
    data: Path = args.data
    images = np.load(data / f"images_{IMAGE_SIZE}.npy")
    captions = np.load(data / "captions_minilm.npz")
    states = torch.from_numpy(captions["states"].astype(np.float32))
    mask = torch.from_numpy(captions["mask"].astype(np.int64))
    if args.limit:
        images, states, mask = images[: args.limit], states[: args.limit], mask[: args.limit]

    autoencoder = train_autoencoder(
        images, args.run / "autoencoder",
        StageConfig(args.ae_steps, args.ae_batch, args.ae_lr, args.seed,
                    checkpoint_every=args.checkpoint_every),
    )
    latents = encode_latents(autoencoder, images)

    from diffuserve.training.text import TextEncoder

    empty = TextEncoder().encode([""])
    unet = train_diffusion(
        latents, states, mask, empty.states[0], empty.mask[0], args.run / "diffusion",
        StageConfig(args.steps, args.batch, args.lr, args.seed,
                    checkpoint_every=args.checkpoint_every),
    )
    if args.decoder_steps:
        autoencoder = finetune_decoder(
            autoencoder, images, args.run / "decoder",
            StageConfig(args.decoder_steps, args.ae_batch, args.ae_lr / 2, args.seed,
                        checkpoint_every=args.checkpoint_every),
        )
    return export(autoencoder, unet, args.export or args.run / "pipeline")


def export_from_run(run: Path, out: Path) -> Path:
    """Export the trained autoencoder and the diffusion checkpoint's EMA weights, e.g.
    to ship a run stopped early."""
    from diffusers import AutoencoderKL

    from diffuserve.training.models import build_unet

    decoder = run / "decoder" / "final"
    autoencoder = AutoencoderKL.from_pretrained(
        decoder if decoder.is_dir() else run / "autoencoder" / "final")
    final = run / "diffusion" / "final"
    if final.is_dir():
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(final)
    else:
        state = torch.load(run / "diffusion" / "checkpoint.pt", map_location="cpu",
                           weights_only=False)
        unet = build_unet()
        unet.load_state_dict(state["ema"])
    return export(autoencoder, unet.eval(), out)

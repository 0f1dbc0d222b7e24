"""Do more latent channels give the built-in model's decoders the artwork's detail?

The question behind the built-in model's next edition (docs/BUILTIN.md, "Detail and
alpha"): its 16×16×4 latents lose detail inside the subject, and more channels at 16×16
cost the UNet nothing measurable. This trains, within ``--seconds``, the decoders of a
model whose latents have ``--extra`` more channels, and measures them as
``builtin_sharpness.py`` measures the shipped decoders alone (the 50 benchmark images'
own latents decoded at 1024²: fine detail against the 256 px artwork's, and PSNR).

- The shipped autoencoder's 4 channels stay exactly as they are (its encoder is frozen),
  so the shipped UNet's latents are unchanged and a next UNet can start from it.
- A second encoder (diffusers' ``Encoder``, after a 4× pixel unshuffle) reads the 256 px
  RGBA artwork and adds ``--extra`` channels at 16×16, as a KL autoencoder's posterior.
- The shipped decoder reads all of them (its ``conv_in``'s new columns start at zero, so
  step 0 is the shipped model: the first line printed is its figures) and is trained
  with the shipped detail decoder and the new encoder: the detail decoder's loss (as
  ``train_builtin detail``) plus the 64 px reconstruction (as the autoencoder stage).

``--control`` zeroes the extra channels and trains everything else the same way, for the
same time: what the training alone gains. ``--subset`` trains on the 50 benchmark images
only: what the decoders can draw from these latents when they have seen an image many
times (an upper bound on what longer training on all the data can reach). ``--save``
keeps the trained modules, ``--init`` starts from them; ``--export`` writes, after a
``--control`` run, a copy of the pipeline with its decoders (how the shipped ones were
trained: docs/BUILTIN.md, "The runs behind the shipped weights").

    python benchmarks/builtin_latent_channels.py [--seconds 2100] [--extra 12] [--control]
        [--save STATE] [--init STATE] [--subset] [--sheet FILE] [--export DIR]

``--sheet`` draws six of the images side by side: the artwork, then the decoders' drawing
before and after this run, each at 160 px (taken from the 1024² image measured).

It trains on a GPU where there is one (as the trainer does, with TF32 products), needs
only the artwork and its manifest in ``--data`` (the 64 px and 256 px arrays are rendered
where prepare-data's files are missing) and no text encoder: ``benchmarks/gpu/
builtin_session.sh`` runs it on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builtin_quality import DEFAULT_DATA  # noqa: E402
from builtin_sharpness import psnr  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution, Encoder  # noqa: E402
from train_builtin.data import load_manifest  # noqa: E402
from train_builtin.pipeline import write_decoders  # noqa: E402
from train_builtin.prepare import render, render_all, rgba_images  # noqa: E402
from train_builtin.train import _reconstruction_loss, detail_loss, pick_device  # noqa: E402

from diffuserve import builtin  # noqa: E402
from diffuserve.builtin.detail import decoder_features  # noqa: E402
from diffuserve.builtin.pipeline import EmojiPipeline  # noqa: E402
from tests.support.images import fine_detail  # noqa: E402


class ExtraEncoder(nn.Module):
    """The 256 px artwork (on white, and its alpha) → ``channels`` more latents at 16×16."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(4)
        self.encoder = Encoder(in_channels=64, out_channels=channels,
                               down_block_types=("DownEncoderBlock2D",) * 3,
                               block_out_channels=(64, 128, 128), layers_per_block=1,
                               norm_num_groups=8, double_z=True)

    def forward(self, rgba: torch.Tensor) -> DiagonalGaussianDistribution:
        return DiagonalGaussianDistribution(self.encoder(self.unshuffle(rgba)))


def widened(vae: Any, extra: int) -> Any:
    """``vae``'s decoder reading ``4 + extra`` latent channels; the new ones unused."""
    config = dict(vae.config)
    config["latent_channels"] = vae.config.latent_channels + extra
    wide = AutoencoderKL.from_config(config)
    old = vae.state_dict()
    new = wide.state_dict()
    for key, value in old.items():
        if new[key].shape == value.shape and not key.startswith(("encoder.", "quant_conv.")):
            new[key] = value.clone()
    channels = vae.config.latent_channels
    new["decoder.conv_in.weight"].zero_()
    new["decoder.conv_in.weight"][:, :channels] = old["decoder.conv_in.weight"]
    new["post_quant_conv.weight"].zero_()
    new["post_quant_conv.weight"][:channels, :channels] = old["post_quant_conv.weight"]
    new["post_quant_conv.weight"][channels:, channels:] = torch.eye(extra)[..., None, None]
    new["post_quant_conv.bias"].zero_()
    new["post_quant_conv.bias"][:channels] = old["post_quant_conv.bias"]
    wide.load_state_dict(new)
    return wide


def narrowed(wide: Any, vae: Any) -> Any:
    """``vae`` (4 latent channels) with the decoder of ``wide`` trained by ``--control``:
    the extra channels were zeros throughout, so the columns of ``conv_in`` and the rows
    of ``post_quant_conv`` that read them stayed zero, and dropping them changes nothing
    the decoder draws."""
    channels = vae.config.latent_channels
    state = vae.state_dict()
    for key, value in wide.state_dict().items():
        if key.startswith(("decoder.", "post_quant_conv.")):
            state[key] = value
    state["decoder.conv_in.weight"] = state["decoder.conv_in.weight"][:, :channels]
    state["post_quant_conv.weight"] = state["post_quant_conv.weight"][:channels, :channels]
    state["post_quant_conv.bias"] = state["post_quant_conv.bias"][:channels]
    narrow = copy.deepcopy(vae)
    narrow.load_state_dict({key: value.clone() for key, value in state.items()})
    with torch.no_grad():
        latents = torch.randn(4, channels, 16, 16, generator=torch.Generator().manual_seed(0))
        latents = latents.to(next(vae.parameters()).device)
        zeros = latents.new_zeros(4, wide.config.latent_channels - channels, 16, 16)
        same = wide.decode(torch.cat([latents, zeros], 1)).sample
        if not torch.allclose(narrow.decode(latents).sample, same, atol=1e-4):
            raise ValueError("these decoders read the extra channels: not a --control run")
    return narrow


def straight(rgba: torch.Tensor) -> torch.Tensor:
    """uint8 straight RGBA (N, H, W, 4) → float (N, 4, H, W) in [0, 1]."""
    return rgba.permute(0, 3, 1, 2).float() / 255


def encoder_input(rgba: torch.Tensor) -> torch.Tensor:
    """uint8 straight RGBA (N, H, W, 4) → the subject on white and its alpha, [-1, 1]."""
    values = straight(rgba)
    alpha = values[:, 3:]
    return torch.cat([values[:, :3] * alpha + (1 - alpha), alpha], 1) * 2 - 1


def pictures_64(data: Path, entries: list[Any]) -> np.ndarray:
    """The 64 px pictures the autoencoder was trained on: prepare-data's file, or rendered
    as it renders them (where only the artwork came along, as on a GPU machine)."""
    if (data / "images_64.npy").is_file():
        return np.load(data / "images_64.npy")
    return render_all(data, entries, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pipeline", type=Path, default=builtin.WEIGHTS_DIR)
    parser.add_argument("--seconds", type=float, default=2100)
    parser.add_argument("--extra", type=int, default=12)
    parser.add_argument("--control", action="store_true",
                        help="zero the extra channels: what the training alone gains")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4, help="decoders")
    parser.add_argument("--extra-lr", type=float, default=1e-3, help="the new encoder")
    parser.add_argument("--kl", type=float, default=1e-6)
    parser.add_argument("--eval-every", type=int, default=400)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save", type=Path, help="keep the trained modules in this file")
    parser.add_argument("--init", type=Path, help="start from the modules --save kept")
    parser.add_argument("--subset", action="store_true",
                        help="train on the 50 benchmark images only")
    parser.add_argument("--sheet", type=Path, help="PNG: artwork, before, after")
    parser.add_argument("--save-dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--export", type=Path,
                        help="with --control: a copy of --pipeline with the trained decoders")
    args = parser.parse_args()
    if args.export and not args.control:
        parser.error("--export needs --control: the pipeline's latents have 4 channels")
    torch.manual_seed(0)
    device = pick_device()  # the trainer's: CUDA (with TF32 products) where there is one

    entries = load_manifest(args.data)
    where = {e.file: i for i, e in enumerate(entries)}
    sample = random.Random(0).sample(entries, min(200, len(entries)))[:50]
    chosen = [where[e.file] for e in sample]
    artworks = [Image.fromarray(render(args.data / "assets" / e.file, 256)) for e in sample]
    side = (1024, 1024)
    artwork_detail = statistics.fmean(
        fine_detail(a.resize(side, Image.Resampling.LANCZOS)) for a in artworks)
    pictures = (torch.from_numpy(pictures_64(args.data, entries)).permute(0, 3, 1, 2)
                .float().div(127.5).sub(1).to(device))
    rgba = torch.from_numpy(rgba_images(args.data, entries, 256)).to(device)

    # Decoding needs no text encoder: the MiniLM package need not be installed.
    pipe = EmojiPipeline.from_pretrained(str(args.pipeline), dtype=torch.float32,
                                         text_encoder=None, tokenizer=None).to(device)
    vae = pipe.vae.eval().requires_grad_(False)
    with torch.no_grad():
        shipped = torch.cat([vae.encode(pictures[i:i + 256]).latent_dist.mode()
                             for i in range(0, len(pictures), 256)])
    wide, encoder = widened(vae, args.extra).to(device), ExtraEncoder(args.extra).to(device)
    detail = copy.deepcopy(pipe.detail).requires_grad_(True)
    modules = {"wide": wide, "extra": encoder, "detail": detail}
    if args.init:
        for name, state in torch.load(args.init, map_location=device).items():
            modules[name].load_state_dict(state)
    # The pipeline decodes with the modules being trained, as it presents a finished image.
    pipe.register_modules(vae=wide, detail=detail)
    scale = wide.config.scaling_factor
    gate = 0.0 if args.control else 1.0
    chosen_rows = torch.tensor(chosen, device=device)

    # Six of the 50 for --sheet: a graduate, a family, a face, beer mugs, a superhero, a car.
    shown_rows = [4, 16, 28, 36, 40, 44]
    columns: list[list[Image.Image]] = [[artworks[k] for k in shown_rows]]

    def evaluate(tag: str, first: bool = False) -> dict[str, Any]:
        for part in (wide, encoder, detail):
            part.eval()
        rows = []
        drawn = []
        with torch.no_grad():
            extra = encoder(encoder_input(rgba[chosen_rows])).mode() * (0.0 if first else gate)
            for k, i in enumerate(chosen):
                latents = torch.cat([shipped[i:i + 1], extra[k:k + 1]], 1) * scale
                shown = pipe.decode_preview(latents, *side)
                rows.append((fine_detail(shown), psnr(shown, artworks[k])))
                if k in shown_rows:
                    drawn.append(shown)
        columns.append(drawn)
        out = {"tag": tag, "fine_detail_ratio": statistics.fmean(r[0] for r in rows)
               / artwork_detail, "psnr_db": statistics.fmean(r[1] for r in rows)}
        print(json.dumps(out), flush=True)
        for part in (wide, encoder, detail):
            part.train()
        return out

    results = [evaluate("start" if args.init else "shipped", first=not args.init)]
    optimizer = torch.optim.AdamW(fused=device.type == "cuda", params=[
        {"params": [*wide.decoder.parameters(), *wide.post_quant_conv.parameters(),
                    *detail.parameters()], "lr": args.lr},
        {"params": list(encoder.parameters()), "lr": args.extra_lr}], weight_decay=1e-4)
    peaks = [group["lr"] for group in optimizer.param_groups]
    order = torch.Generator().manual_seed(0)
    pool = torch.tensor(chosen) if args.subset else torch.arange(len(shipped))
    losses: list[torch.Tensor] = []
    step = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < args.seconds:
        # Warm-up over 50 steps, cosine decay over the time budget.
        factor = min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * elapsed / args.seconds))
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak * factor
        index = torch.randint(0, len(pool), (args.batch,), generator=order)
        index = pool[index].sort().values
        index = index.to(device)
        rows = rgba[index]
        target = straight(rows)
        if args.control:  # the extra channels are zeros: no encoder to run
            latents = torch.cat([shipped[index], shipped.new_zeros(len(index), args.extra,
                                                                   *shipped.shape[2:])], 1)
            kl = shipped.new_zeros(())
        else:
            posterior = encoder(encoder_input(rows))
            latents = torch.cat([shipped[index], posterior.sample()], 1)
            kl = args.kl * posterior.kl().mean()
        features, picture = decoder_features(wide, latents)
        loss, _ = detail_loss(detail(features, picture), target)
        total = loss + _reconstruction_loss(picture, pictures[index]) + kl
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses.append(loss.detach())  # read every 50 steps: no wait for the GPU each step
        step += 1
        if step % 50 == 0:
            print(f"step {step} ({elapsed:.0f} s): detail loss "
                  f"{float(torch.stack(losses[-50:]).mean()):.4f}", flush=True)
        if step % args.eval_every == 0:
            results.append(evaluate(f"step {step}"))
    results.append(evaluate(f"final, step {step}"))
    if args.sheet:
        cell = 160
        sheet = Image.new("RGB", (cell * 3, cell * len(shown_rows)), "white")
        for x, column in enumerate((columns[0], columns[1], columns[-1])):
            for y, picture in enumerate(column):
                sheet.paste(picture.resize((cell, cell), Image.Resampling.LANCZOS),
                            (x * cell, y * cell))
        sheet.save(args.sheet, optimize=True)
    if args.save:
        dtype = getattr(torch, args.save_dtype)
        torch.save({name: {key: value.to("cpu", dtype) for key, value in part.state_dict().items()}
                    for name, part in modules.items()}, args.save)
    if args.export:
        for part in (wide, detail):
            part.eval()
        out = write_decoders(args.pipeline, args.export, copy.deepcopy(detail),
                             narrowed(wide, vae))
        print(f"pipeline → {out}")
    if args.json:
        args.json.write_text(json.dumps({"extra": args.extra, "control": args.control,
                                         "subset": args.subset,
                                         "init": str(args.init) if args.init else None,
                                         "steps": step, "batch": args.batch,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Training stages of the built-in model: autoencoder, latents, diffusion UNet, export.

Every stage is seeded, shows a progress bar, appends its losses to ``losses.jsonl`` and
keeps a checkpoint it resumes from (``checkpoint.pt``, in the run folder, never shipped).
The same code runs a smoke test on the CPU (a few steps on a handful of images) and the
real run on a GPU.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from diffuserve.training.models import (
    build_autoencoder,
    build_unet,
    scheduler_config,
)


@dataclass(frozen=True)
class StageConfig:
    steps: int
    batch_size: int
    learning_rate: float
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Run:
    """A stage's folder: checkpoint, loss log, final weights."""

    def __init__(self, folder: Path, config: StageConfig) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(asdict(config), indent=2))
        self.log_path = folder / "losses.jsonl"
        self.checkpoint = folder / "checkpoint.pt"

    def log(self, step: int, **values: float) -> None:
        with self.log_path.open("a") as fh:
            fh.write(json.dumps({"step": step, "time": round(time.time(), 1), **values}) + "\n")

    def load(self) -> dict[str, Any] | None:
        if not self.checkpoint.is_file():
            return None
        state: dict[str, Any] = torch.load(self.checkpoint, map_location="cpu",
                                           weights_only=False)
        return state

    def save(self, state: dict[str, Any]) -> None:
        partial = self.checkpoint.with_suffix(".part")
        torch.save(state, partial)
        partial.replace(self.checkpoint)

    def restore(self, generator: torch.Generator, **parts: Any) -> int:
        """Load every part's state from the checkpoint; the step to go on from."""
        state = self.load()
        if state is None:
            return 0
        for name, part in parts.items():
            part.load_state_dict(state[name])
        generator.set_state(state["generator"])
        return int(state["step"])

    def store(self, step: int, generator: torch.Generator, **parts: Any) -> None:
        state = {name: part.state_dict() for name, part in parts.items()}
        self.save({**state, "generator": generator.get_state(), "step": step})


def _optimise(run: _Run, config: StageConfig, generator: torch.Generator,
              parts: dict[str, Any], size: int, desc: str,
              compute: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, Any]]],
              clip: float | None = None,
              after_step: Callable[[int], None] | None = None) -> None:
    """The loop every stage shares: resume, draw a batch of indices, step the optimiser
    and its schedule, show progress, log losses, checkpoint. ``compute`` returns the loss
    of a batch and other values to log."""
    model, optimizer, schedule = parts["model"], parts["optimizer"], parts["schedule"]
    step = run.restore(generator, **parts)
    with tqdm(total=config.steps, initial=step, desc=desc, unit="step") as bar:
        while step < config.steps:
            index = torch.randint(0, size, (config.batch_size,), generator=generator)
            loss, extras = compute(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step(step)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % config.log_every == 0 or step == config.steps:
                run.log(step, loss=loss.item(), **{k: float(v) for k, v in extras.items()})
            if step % config.checkpoint_every == 0 or step == config.steps:
                run.store(step, generator, **parts)


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC → float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_autoencoder(images: np.ndarray, folder: Path, config: StageConfig,
                      kl_weight: float = 1e-6) -> Any:
    """Reconstruction (L1 + MSE) with a small KL term, AdamW, cosine decay."""
    device = pick_device()
    generator = seed_everything(config.seed)
    run = _Run(folder, config)
    model = build_autoencoder().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule}
    data = _to_unit(images)
    model.train()

    def compute(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        batch = data[index].to(device)
        posterior = model.encode(batch).latent_dist
        reconstruction = model.decode(posterior.sample(generator=None)).sample
        recon = (reconstruction - batch).abs().mean() + (reconstruction - batch).pow(2).mean()
        kl = posterior.kl().mean()
        return recon + kl_weight * kl, {"reconstruction": recon.item(), "kl": kl.item()}

    _optimise(run, config, generator, parts, len(data), "autoencoder", compute)
    model.eval()
    # The latents' spread sets the scaling factor, as Stable Diffusion's VAE has one.
    with torch.no_grad():
        sample = data[: min(len(data), 512)].to(device)
        latents = model.encode(sample).latent_dist.mode()
        model.register_to_config(scaling_factor=float(1.0 / latents.std().clamp(min=1e-3)))
    model.save_pretrained(folder / "final", safe_serialization=True)
    return model


def finetune_decoder(autoencoder: Any, images: np.ndarray, folder: Path,
                     config: StageConfig) -> Any:
    """More reconstruction training for the decoder alone: the encoder, and so the latents
    the diffusion model learns, stay exactly as they are."""
    device = next(autoencoder.parameters()).device
    generator = seed_everything(config.seed)
    run = _Run(folder, config)
    model = copy.deepcopy(autoencoder)
    trainable = [*model.decoder.parameters(), *model.post_quant_conv.parameters()]
    model.requires_grad_(False)
    for parameter in trainable:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule}
    data = _to_unit(images)
    with torch.no_grad():
        latents = torch.cat([model.encode(data[i:i + 256].to(device)).latent_dist.mode()
                             for i in range(0, len(data), 256)])
    model.decoder.train()

    def compute(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        target = data[index].to(device)
        output = model.decode(latents[index]).sample
        return (output - target).abs().mean() + (output - target).pow(2).mean(), {}

    _optimise(run, config, generator, parts, len(data), "decoder", compute)
    model.eval().requires_grad_(False)
    model.save_pretrained(folder / "final", safe_serialization=True)
    return model


def encode_latents(autoencoder: Any, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """The scaled posterior means of every image: the diffusion model's training data."""
    device = next(autoencoder.parameters()).device
    data = _to_unit(images)
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data[start:start + batch_size].to(device)
            out.append(autoencoder.encode(batch).latent_dist.mode().cpu())
    return torch.cat(out) * autoencoder.config.scaling_factor


def train_diffusion(latents: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                    empty_states: torch.Tensor, empty_mask: torch.Tensor, folder: Path,
                    config: StageConfig, condition_dropout: float = 0.1,
                    ema_decay: float = 0.999) -> Any:
    """Epsilon prediction with a DDPM noise schedule; captions dropped with probability
    ``condition_dropout`` (for classifier-free guidance); an EMA of the weights is what
    gets exported."""
    from diffusers import DDPMScheduler

    device = pick_device()
    generator = seed_everything(config.seed)
    run = _Run(folder, config)
    model = build_unet().to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=1e-4)
    warmup = max(1, min(500, config.steps // 20))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup)
        * 0.5 * (1 + np.cos(np.pi * min(1.0, s / max(1, config.steps)))))
    noise_schedule = DDPMScheduler(**scheduler_config())
    alphas = noise_schedule.alphas_cumprod.to(device)
    parts = {"model": model, "ema": ema, "optimizer": optimizer, "schedule": schedule}
    states, mask = states.float(), mask.long()
    model.train()

    def compute(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        clean = latents[index].to(device)
        context = states[index].clone()
        attention = mask[index].clone()
        dropped = torch.rand(config.batch_size, generator=generator) < condition_dropout
        context[dropped] = empty_states.float()
        attention[dropped] = empty_mask.long()
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps,
                                  (config.batch_size,), generator=generator).to(device)
        a = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        predicted = model(noisy, timesteps, encoder_hidden_states=context.to(device),
                          encoder_attention_mask=attention.to(device)).sample
        return (predicted - noise).pow(2).mean(), {"lr": schedule.get_last_lr()[0]}

    def update_ema(step: int) -> None:
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for target, source in zip(ema.parameters(), model.parameters(), strict=True):
                target.lerp_(source, 1 - decay)

    _optimise(run, config, generator, parts, len(latents), "diffusion", compute, clip=1.0,
              after_step=update_ema)
    ema.eval()
    ema.save_pretrained(folder / "final", safe_serialization=True)
    return ema


def export(autoencoder: Any, unet: Any, folder: Path, dtype: torch.dtype = torch.float16
           ) -> Path:
    """A diffusers-format folder that loads through the same path as any pipeline."""
    from diffusers import DPMSolverMultistepScheduler

    from diffuserve.builtin.pipeline import EmojiPipeline

    scheduler = DPMSolverMultistepScheduler(**scheduler_config(),
                                            algorithm_type="dpmsolver++", solver_order=2)
    pipeline = EmojiPipeline(unet=copy.deepcopy(unet).to("cpu", dtype),
                             vae=copy.deepcopy(autoencoder).to("cpu", dtype),
                             scheduler=scheduler)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder

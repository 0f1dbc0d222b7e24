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

from train_builtin.models import (
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
    #: A wall-clock budget: the first steps are timed and the stage is shortened to the
    #: steps that fit (its learning-rate schedule with it). None: exactly ``steps``.
    max_seconds: float | None = None


#: The steps skipped (warm-up) and then timed to fit a stage into ``max_seconds``.
CALIBRATION = (5, 25)


class _Length:
    """How many steps a stage runs; its learning-rate schedule reads it, so that a stage
    shortened to fit its time budget still decays to the end."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def progress(self, step: int) -> float:
        return min(1.0, step / max(1, self.steps))

    def cosine(self, step: int) -> float:
        return float(0.5 * (1 + np.cos(np.pi * self.progress(step))))


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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

    def restore(self, generator: torch.Generator, length: _Length, **parts: Any) -> int:
        """Load every part's state from the checkpoint; the step to go on from (0 with
        no checkpoint). A length fitted to a time budget is restored too."""
        state = self.load()
        if state is None:
            return 0
        for name, part in parts.items():
            part.load_state_dict(state[name])
        generator.set_state(state["generator"])
        length.steps = int(state.get("length", length.steps))
        return int(state["step"])

    def store(self, step: int, generator: torch.Generator, length: _Length,
              **parts: Any) -> None:
        state = {name: part.state_dict() for name, part in parts.items()}
        self.save({**state, "generator": generator.get_state(), "step": step,
                   "length": length.steps})


def _optimise(run: _Run, config: StageConfig, length: _Length, generator: torch.Generator,
              parts: dict[str, Any], size: int, desc: str,
              compute: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, Any]]],
              clip: float | None = None,
              after_step: Callable[[int], None] | None = None,
              calibrate_after: int = 0) -> None:
    """The loop every stage shares: resume, draw a batch of indices, step the optimiser
    and its schedule, show progress, log losses, checkpoint, and with ``max_seconds`` fit
    the stage into its time budget. ``compute`` returns the loss of a batch and other
    values (floats or tensors) to log; values are read back from the device only when they
    are logged, so that a GPU is never waited on between steps. The budget's timed steps
    come after the first ``calibrate_after`` (steps that cost less than the rest, such
    as a discriminator's learning alone)."""
    model, optimizer, schedule = parts["model"], parts["optimizer"], parts["schedule"]
    device = next(model.parameters()).device
    step = run.restore(generator, length, **parts)
    first = step
    # A resumed run keeps the length its first start fitted.
    budget = (_Budget(config.max_seconds, config.steps, device, calibrate_after)
              if config.max_seconds is not None and step == 0 else None)
    with torch.enable_grad(), tqdm(total=length.steps, initial=step, desc=desc,
                                   unit="step") as bar:
        while step < length.steps:
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
            if budget is not None:
                budget.after(step - first, length)
                bar.total = length.steps
            if step % config.log_every == 0 or step == length.steps:
                values = {k: float(v) for k, v in extras.items()}
                bar.set_postfix(loss=f"{loss.item():.4f}")
                run.log(step, loss=loss.item(), **values)
            if step % config.checkpoint_every == 0 or step == length.steps:
                run.store(step, generator, length, **parts)


class _Budget:
    """A stage's wall-clock budget. After the calibration steps the stage's length
    becomes the steps that fit (never more than ``cap``); past the budget by a tenth the
    stage ends where it is. The calibration steps come after the first ``offset``."""

    def __init__(self, seconds: float, cap: int, device: torch.device,
                 offset: int = 0) -> None:
        self.seconds, self.cap, self.device, self.offset = seconds, cap, device, offset
        self.began = time.perf_counter()
        self.timed_from = self.began

    def after(self, done: int, length: _Length) -> None:
        """Bookkeeping after ``done`` steps of this start."""
        skip, timed = (self.offset + step for step in CALIBRATION)
        if done == skip:
            _synchronize(self.device)
            self.timed_from = time.perf_counter()
        elif done == timed:
            _synchronize(self.device)
            now = time.perf_counter()
            per_step = (now - self.timed_from) / (timed - skip)
            fits = done + int((self.seconds - (now - self.began)) / per_step)
            length.steps = max(done, min(self.cap, fits))
            tqdm.write(f"{per_step * 1000:.1f} ms/step: {length.steps} steps fit in "
                       f"{self.seconds:.0f} s")
        elif done > timed and time.perf_counter() - self.began > 1.1 * self.seconds:
            length.steps = done


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC → float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _adamw(parameters: Any, device: torch.device, learning_rate: float,
           weight_decay: float = 1e-2) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay,
                             fused=device.type == "cuda")


def _reconstruction_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).abs().mean() + (output - target).pow(2).mean()


def train_autoencoder(images: np.ndarray, folder: Path, config: StageConfig,
                      kl_weight: float = 1e-6) -> Any:
    """Reconstruction (L1 + MSE) with a small KL term, AdamW, cosine decay."""
    device = pick_device()
    generator = seed_everything(config.seed)
    run = _Run(folder, config)
    model = build_autoencoder().to(device)
    optimizer = _adamw(model.parameters(), device, config.learning_rate)
    length = _Length(config.steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, length.cosine)
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule}
    data = _to_unit(images).to(device)
    model.train()

    def compute(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        batch = data[index.to(device)]
        posterior = model.encode(batch).latent_dist
        reconstruction = model.decode(posterior.sample(generator=None)).sample
        recon = _reconstruction_loss(reconstruction, batch)
        kl = posterior.kl().mean()
        return recon + kl_weight * kl, {"reconstruction": recon.detach(), "kl": kl.detach()}

    _optimise(run, config, length, generator, parts, len(data), "autoencoder", compute)
    model.eval()
    # The latents' spread sets the scaling factor, as Stable Diffusion's VAE has one.
    with torch.no_grad():
        latents = model.encode(data[: min(len(data), 512)]).latent_dist.mode()
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
    optimizer = _adamw(trainable, device, config.learning_rate)
    length = _Length(config.steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, length.cosine)
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule}
    data = _to_unit(images).to(device)
    with torch.no_grad():
        latents = torch.cat([model.encode(data[i:i + 256]).latent_dist.mode()
                             for i in range(0, len(data), 256)])
    model.decoder.train()

    def compute(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        index = index.to(device)
        return _reconstruction_loss(model.decode(latents[index]).sample, data[index]), {}

    _optimise(run, config, length, generator, parts, len(data), "decoder", compute)
    model.eval().requires_grad_(False)
    model.save_pretrained(folder / "final", safe_serialization=True)
    return model


def detail_loss(drawn: Any, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """A detail decoder's loss (``drawn``: its :class:`~diffuserve.builtin.detail.Drawn`)
    against straight-alpha RGBA targets in [0, 1]: the subject on white (what an opaque
    image shows), its edges (differences of neighbouring pixels, so that sharp outlines
    are not averaged away), the premultiplied colour (the cut-out over black) and the
    alpha itself, all L1."""
    want_alpha = target[:, 3:]
    premultiplied = target[:, :3] * want_alpha
    want_white = (premultiplied + 1 - want_alpha) * 2 - 1

    def edges(picture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (picture[..., 1:, :] - picture[..., :-1, :],
                picture[..., :, 1:] - picture[..., :, :-1])

    on_white = drawn.on(1.0)
    white = (on_white - want_white).abs().mean()
    edge = sum((a - b).abs().mean() for a, b in zip(edges(on_white), edges(want_white),
                                                    strict=True))
    over_black = (drawn.alpha * (drawn.colour + 1) / 2 - premultiplied).abs().mean()
    coverage = (drawn.alpha - want_alpha).abs().mean()
    loss = white + edge + over_black + coverage
    return loss, {"on_white": white.detach(), "alpha": coverage.detach()}


class Adversary(torch.nn.Module):
    """A patch discriminator judging a detail decoder's drawings against the artwork, and
    the term it adds to the decoder's loss, as latent diffusion's autoencoders are
    trained: a loss of averages (L1) draws what the latents leave uncertain as a blur,
    and the discriminator tells a blur from the artwork's crisp edges.

    Both are judged as the subject on white and its alpha. Each call first steps the
    discriminator (hinge loss, on the drawing detached), then returns the decoder's term
    (``-logits``), weighed ``weight`` × the ratio of the reconstruction loss's gradient to
    the term's at the decoder's last layer, so that neither drowns the other. For the
    first ``start`` calls only the discriminator learns (the decoder's term is 0)."""

    calls: torch.Tensor

    def __init__(self, weight: float, start: int, learning_rate: float,
                 last_layer: torch.Tensor, device: torch.device) -> None:
        from train_builtin.models import build_discriminator

        super().__init__()
        self.weight, self.start = weight, start
        # In a tuple: not a parameter of this module (it is the decoder's).
        self.last_layer = (last_layer,)
        self.critic = build_discriminator().to(device)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.optimizer = torch.optim.AdamW(self.critic.parameters(), lr=learning_rate,
                                           betas=(0.5, 0.9), weight_decay=0.0)

    @staticmethod
    def judged(on_white: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return torch.cat([on_white, alpha * 2 - 1], dim=1)

    def forward(self, drawn: Any, target: torch.Tensor, loss: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, Any]]:
        from torch.nn.functional import relu

        want_alpha = target[:, 3:]
        want_white = (target[:, :3] * want_alpha + 1 - want_alpha) * 2 - 1
        real = self.judged(want_white, want_alpha)
        fake = self.judged(drawn.on(1.0), drawn.alpha)
        critic_loss = (relu(1 - self.critic(real)).mean()
                       + relu(1 + self.critic(fake.detach())).mean())
        self.optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.optimizer.step()
        self.calls.add_(1)
        extras: dict[str, Any] = {"critic": critic_loss.detach()}
        if int(self.calls) <= self.start:
            return loss.new_zeros(()), extras
        self.critic.requires_grad_(False)
        term = -self.critic(fake).mean()
        self.critic.requires_grad_(True)
        wanted = torch.autograd.grad(loss, self.last_layer, retain_graph=True)[0].norm()
        given = torch.autograd.grad(term, self.last_layer, retain_graph=True)[0].norm()
        balance = (wanted / (given + 1e-4)).clamp(0, 1e4).detach()
        return self.weight * balance * term, {**extras, "adversarial": term.detach(),
                                              "balance": balance}


def train_detail_decoder(autoencoder: Any, images: np.ndarray, rgba: np.ndarray,
                         folder: Path, config: StageConfig, start: Any = None,
                         with_decoder: bool = False, adversarial: float = 0.0,
                         adversarial_start: int = 200) -> Any:
    """A detail decoder (:class:`diffuserve.builtin.detail.DetailDecoder`) for
    ``autoencoder``, learning the artwork at ``rgba``'s size (straight alpha) from the
    last feature maps of the autoencoder's decoder. ``start``: a decoder to go on from.

    By default the autoencoder stays exactly as it is and its feature maps of every
    image's latents are computed once. ``with_decoder`` trains the autoencoder's decoder
    (and ``post_quant_conv``) with it, in place, on the detail decoder's loss plus its
    own 64 px reconstruction: the encoder, hence every latent and the UNet trained on
    them, stays as it is, and the decoders learn to draw more of what the latents hold.
    ``adversarial`` > 0 adds a patch discriminator's judgement (:class:`Adversary`) with
    that weight, after ``adversarial_start`` steps of the discriminator alone."""
    from torch import nn

    from diffuserve.builtin.detail import DetailDecoder, decoder_features

    device = next(autoencoder.parameters()).device
    generator = seed_everything(config.seed)
    run = _Run(folder, config)
    model = (copy.deepcopy(start) if start is not None else DetailDecoder()).to(device)
    # Unscaled, as the decoder reads them.
    latents = (encode_latents(autoencoder, images) / autoencoder.config.scaling_factor
               ).to(device)
    targets = torch.from_numpy(rgba).permute(0, 3, 1, 2)
    draw: Callable[[torch.Tensor], tuple[Any, torch.Tensor | None]]
    if with_decoder:
        trained = nn.ModuleDict({"detail": model, "decoder": autoencoder.decoder,
                                 "post_quant_conv": autoencoder.post_quant_conv})
        trained.requires_grad_(True).train()
        pictures = _to_unit(images)

        def draw(index: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
            features, picture = decoder_features(autoencoder, latents[index.to(device)])
            return (model(features, picture),
                    _reconstruction_loss(picture, pictures[index].to(device)))
    else:
        trained = model
        with torch.no_grad():
            pairs = [decoder_features(autoencoder, latents[i:i + 64])
                     for i in range(0, len(latents), 64)]
        # Half precision keeps the features of every image in memory (0.9 GB for 3,391).
        features = torch.cat([pair[0].half() for pair in pairs])
        pictures = torch.cat([pair[1].half() for pair in pairs])

        def draw(index: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
            return model(features[index].to(device).float(),
                         pictures[index].to(device).float()), None

    adversary = (Adversary(adversarial, adversarial_start, config.learning_rate,
                           model.conv_out.weight, device) if adversarial > 0 else None)

    def compute(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        drawn, reconstruction = draw(index)
        target = targets[index].to(device).float() / 255
        loss, extras = detail_loss(drawn, target)
        if reconstruction is not None:
            loss = loss + reconstruction
            extras["reconstruction"] = reconstruction.detach()
        if adversary is not None:
            term, judged = adversary(drawn, target, loss)
            loss, extras = loss + term, {**extras, **judged}
        return loss, extras

    optimizer = _adamw(trained.parameters(), device, config.learning_rate, weight_decay=1e-4)
    length = _Length(config.steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, length.cosine)
    parts = {"model": trained, "optimizer": optimizer, "schedule": schedule}
    if adversary is not None:
        parts.update(adversary=adversary, adversary_optimizer=adversary.optimizer)
    model.train()
    _optimise(run, config, length, generator, parts, len(latents), "detail decoder", compute,
              calibrate_after=adversarial_start if adversary is not None else 0)
    trained.eval().requires_grad_(False)
    model.save_pretrained(folder / "final", safe_serialization=True)
    if with_decoder:
        autoencoder.save_pretrained(folder / "final_vae", safe_serialization=True)
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


@dataclass(frozen=True)
class Captions:
    """What the diffusion model is conditioned on, row by row with the latents."""

    states: torch.Tensor  # (N, T, 384) token states of each image's caption
    mask: torch.Tensor  # (N, T)
    empty_states: torch.Tensor  # (T, 384) the empty caption, for guidance
    empty_mask: torch.Tensor  # (T,)
    #: Optional coarser captions ("a woman swimming" for every skin tone): their states
    #: and masks, and for each image the row of its coarser caption or -1.
    coarse_states: torch.Tensor | None = None
    coarse_mask: torch.Tensor | None = None
    coarse_index: torch.Tensor | None = None


def train_diffusion(latents: torch.Tensor, captions: Captions, folder: Path,
                    config: StageConfig, condition_dropout: float = 0.1,
                    coarse_probability: float = 0.25, ema_decay: float = 0.999,
                    snr_gamma: float = 5.0) -> Any:
    """Epsilon prediction with a DDPM noise schedule, each timestep's loss weighted by
    min(SNR, γ)/SNR (Min-SNR weighting, Hang et al. 2023, which speeds convergence).
    An image's caption is swapped for its coarser one with probability
    ``coarse_probability``, so that a prompt leaving the skin tone open is drawn in each
    of them, seed by seed; captions are dropped with probability ``condition_dropout``
    (for classifier-free guidance); an EMA of the weights is what gets exported."""
    from diffusers import DDPMScheduler

    device = pick_device()
    generator = seed_everything(config.seed)
    run = _Run(folder, config)
    model = build_unet().to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = _adamw(model.parameters(), device, config.learning_rate, weight_decay=1e-4)
    length = _Length(config.steps)

    def warmup_cosine(step: int) -> float:
        warmup = max(1, min(500, length.steps // 20))
        return min(1.0, (step + 1) / warmup) * length.cosine(step)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
    noise_schedule = DDPMScheduler(**scheduler_config())
    alphas = noise_schedule.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    weights = snr.clamp(max=snr_gamma) / snr
    parts = {"model": model, "ema": ema, "optimizer": optimizer, "schedule": schedule}
    latents = latents.to(device)
    states, mask = captions.states.float().to(device), captions.mask.long().to(device)
    empty_states = captions.empty_states.float().to(device)
    empty_mask = captions.empty_mask.long().to(device)
    coarse = False
    if (captions.coarse_index is not None and captions.coarse_states is not None
            and captions.coarse_mask is not None):
        coarse = bool((captions.coarse_index >= 0).any())
        coarse_states = captions.coarse_states.float().to(device)
        coarse_mask = captions.coarse_mask.long().to(device)
        coarse_index = captions.coarse_index.long().to(device)
    model.train()

    def compute(index: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        draws = torch.rand(2, config.batch_size, generator=generator)
        index = index.to(device)
        clean = latents[index]
        context, attention = states[index], mask[index]
        if coarse:
            rows = coarse_index[index]
            swap = ((draws[0].to(device) < coarse_probability) & (rows >= 0)).view(-1, 1)
            rows = rows.clamp(min=0)
            context = torch.where(swap.unsqueeze(-1), coarse_states[rows], context)
            attention = torch.where(swap, coarse_mask[rows], attention)
        dropped = (draws[1] < condition_dropout).to(device).view(-1, 1)
        context = torch.where(dropped.unsqueeze(-1), empty_states, context)
        attention = torch.where(dropped, empty_mask, attention)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps,
                                  (config.batch_size,), generator=generator).to(device)
        a = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        predicted = model(noisy, timesteps, encoder_hidden_states=context,
                          encoder_attention_mask=attention).sample
        per_sample = (predicted - noise).pow(2).mean(dim=(1, 2, 3))
        return (weights[timesteps] * per_sample).mean(), {"lr": schedule.get_last_lr()[0]}

    ema_parameters, parameters = list(ema.parameters()), list(model.parameters())

    def update_ema(step: int) -> None:
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_parameters, parameters, 1 - decay)

    _optimise(run, config, length, generator, parts, len(latents), "diffusion", compute,
              clip=1.0, after_step=update_ema)
    ema.eval()
    ema.save_pretrained(folder / "final", safe_serialization=True)
    return ema


def compact_unet(unet: Any) -> Any:
    """``unet`` as the UNet class that is saved with 8-bit weights (on the CPU)."""
    from diffuserve.builtin.compact import CompactUNet2DConditionModel

    compact = CompactUNet2DConditionModel.from_config(unet.config)
    compact.load_state_dict({k: v.float().cpu() for k, v in unet.state_dict().items()})
    return compact.eval()


def export(autoencoder: Any, unet: Any, folder: Path, dtype: torch.dtype = torch.float16
           ) -> Path:
    """A diffusers-format folder that loads through the same path as any pipeline: the
    UNet saved with 8-bit weights (:mod:`diffuserve.builtin.compact`), the autoencoder
    in ``dtype``."""
    from diffusers import DPMSolverMultistepScheduler

    from diffuserve.builtin.pipeline import EmojiPipeline

    # Steps evenly spaced in log-SNR: as good in 8 steps as evenly spaced timesteps in
    # 20 (benchmarks/builtin_quality.py), so the model is served with 8.
    scheduler = DPMSolverMultistepScheduler(**scheduler_config(),
                                            algorithm_type="dpmsolver++", solver_order=2,
                                            use_lu_lambdas=True)
    pipeline = EmojiPipeline(unet=compact_unet(unet),
                             vae=copy.deepcopy(autoencoder).to("cpu", dtype),
                             scheduler=scheduler)
    pipeline.save_pretrained(folder, safe_serialization=True)
    forget_paths(folder)
    return folder


def forget_paths(pipeline: Path) -> None:
    """Drop the ``_name_or_path`` diffusers writes into each component's config of the
    pipeline folder ``pipeline``: where a module was loaded from on the training
    machine means nothing to the folder's users. Every writer of a pipeline calls it."""
    for config in pipeline.glob("*/config.json"):
        values = json.loads(config.read_text())
        if values.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")

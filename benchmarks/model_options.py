"""What each memory and speed option of a model costs and saves: weight bytes, peak
memory, seconds per image, and the quality lost against the same model without it.

Two models, through the diffusers backend as the server loads them:

- ``builtin``: the built-in model (a small trained UNet, PyTorch runtime), 256², its 8
  steps, one image per call: none, int8, fp8 (torchao quantises its UNet's linear layers
  in place: 42 % of its weights; the rest are convolutions), and a cache (refused: a
  UNet);
- ``flux``: a random FLUX.1-dev architecture scaled down to 7.4 M transformer parameters
  (2 double and 2 single blocks of width 256, 16 latent channels, a 4-layer 512-wide T5
  of 10.6 M, a 1.2 M CLIP, a 1 M VAE), 256², 12 steps at guidance 3.5, one image per
  call: none, int8, fp8, a Q8_0 GGUF denoiser,
  first-block:0.1 / 0.2 / 0.5, taylorseer, faster, int8 with first-block:0.1.

Options the CPU cannot run (nf4, int4, offload) and caches the model cannot take are
listed with the line that refuses them at load.

Each option runs in a process of its own (so that its peak memory is its own): load,
one warm-up call, then one image per seed (``--seeds``), each timed. Reported per option:

- weight bytes: :func:`diffuserve.engine.backends.diffusers.memory.weight_bytes` (every
  storage the pipeline's modules hold, quantised tensors by their inner tensors);
- peak memory: the process's peak resident set (``ru_maxrss``) less its resident set
  before loading (diffuserve's backend imported; what diffusers imports while loading is
  counted, the same for every option) — loading and drawing included, so it counts the
  float copy a quantiser reads before converting it;
- seconds per image: the median over the seeds (on a shared machine, noisy: compare
  within one run, and read the next column too);
- attention run: the share of the denoiser's attention computations that ran, against
  the option-less run (counted at each attention processor, which a skipped block or
  attention layer never reaches): the work a cache saved, whatever the machine's load;
- quality against the option-less run of the same model, the same seeds and prompts:
  PSNR (dB, of the 8-bit RGB images; ∞ where identical) and SSIM (scikit-image's
  structural similarity on the RGB images, 1 = identical), each the mean over the seeds.
  SSIM stands in for a learned perceptual distance: LPIPS needs torchvision and
  downloaded AlexNet/VGG weights, which a CPU-only offline machine has neither of.

    python benchmarks/model_options.py [--models builtin flux] [--seeds 3] [--threads 1]
                                       [--json out.json]

On random weights the FLUX images are not pictures, so its quality figures say how far an
option moves the computation, not what an eye would see; the built-in model's are
pictures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ("a red apple", "a smiling cat", "a blue car", "a waving hand")

#: Option sets per model: a label and the models-file fields.
BUILTIN_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("int8", {"quantize": "int8"}),
    ("fp8", {"quantize": "fp8"}),
    ("first-block:0.1", {"cache": "first-block:0.1"}),
]
FLUX_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("int8", {"quantize": "int8"}),
    ("fp8", {"quantize": "fp8"}),
    ("gguf Q8_0", {"transformer": "GGUF"}),
    ("first-block:0.1", {"cache": "first-block:0.1"}),
    ("first-block:0.2", {"cache": "first-block:0.2"}),
    ("first-block:0.5", {"cache": "first-block:0.5"}),
    ("taylorseer", {"cache": "taylorseer"}),
    ("faster", {"cache": "faster"}),
    ("int8 + first-block:0.1", {"quantize": "int8", "cache": "first-block:0.1"}),
    ("nf4", {"quantize": "nf4"}),
    ("int4", {"quantize": "int4"}),
    ("offload model", {"offload": "model"}),
]
SETTINGS = {"builtin": {"size": 256, "steps": 8, "guidance": 7.5},
            "flux": {"size": 256, "steps": 12, "guidance": 3.5}}


# ----------------------------------------------------------------------- the FLUX model

def build_flux(path: Path) -> Path:
    """A random FLUX.1-dev pipeline, scaled down (see the module's docstring)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from tests.support.tiny_pipelines import build_tiny_clip_tokenizer
    from tests.support.tiny_tokenizers import build_tiny_t5_tokenizer

    tokenizer, tokenizer_2 = build_tiny_clip_tokenizer(), build_tiny_t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
        attention_head_dim=64, num_attention_heads=4, joint_attention_dim=512,
        pooled_projection_dim=256, guidance_embeds=True, axes_dims_rope=(16, 24, 24))
    clip = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), hidden_size=256,
        intermediate_size=512, num_attention_heads=4, num_hidden_layers=2,
        projection_dim=256))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=512, d_kv=64, d_ff=1024, num_layers=4,
        num_heads=8, dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, latent_channels=16, norm_num_groups=16, sample_size=256,
        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
        shift_factor=0.1159)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
        max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tokenizer,
                 text_encoder_2=t5, tokenizer_2=tokenizer_2, transformer=transformer,
                 image_encoder=None, feature_extractor=None,
                 ).save_pretrained(path, safe_serialization=True)
    return path


# ------------------------------------------------------------------ one option, one process

def count_attention(denoiser: Any) -> list[int]:
    """A counter of the attention computations of ``denoiser``: each attention module's
    processor (called only where the module really runs: a cache that skips a block or
    an attention layer skips it) replaced by a subclass that counts its calls."""
    import functools

    counter = [0]
    for module in denoiser.modules():
        processor = getattr(module, "processor", None)
        if processor is None or not hasattr(module, "set_processor"):
            continue
        call = type(processor).__call__

        @functools.wraps(call)
        def counted(self: Any, *args: Any, __call: Any = call, **kwargs: Any) -> Any:
            counter[0] += 1
            return __call(self, *args, **kwargs)

        processor.__class__ = type(f"Counted{type(processor).__name__}",
                                   (type(processor),), {"__call__": counted})
    return counter


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_option(model: str, source: str, fields: dict[str, Any], seeds: int, threads: int,
               out: Path) -> dict[str, Any]:
    """In this process: load ``source`` with ``fields``, draw, write the images to
    ``out``; the figures as a dict (or the refusal)."""
    import torch

    from diffuserve.config import ModelSpec
    from diffuserve.engine.backends.diffusers import DiffusersBackend
    from diffuserve.engine.backends.diffusers.memory import weight_bytes
    from diffuserve.engine.errors import ModelLoadFailed
    from diffuserve.engine.types import GenerationParams

    settings = SETTINGS[model]
    side, steps = settings["size"], settings["steps"]
    torch.set_grad_enabled(False)
    torch.set_num_threads(threads)
    before = rss_bytes()
    started = time.perf_counter()
    try:
        backend = DiffusersBackend(ModelSpec(name=model, source=source, max_batch_size=1,
                                             runtime="torch", **fields))
        backend.load()
    except ModelLoadFailed as exc:
        return {"refused": str(exc)}
    loaded = time.perf_counter() - started

    def params(seed: int, step_count: int) -> GenerationParams:
        return GenerationParams(
            prompt=PROMPTS[seed % len(PROMPTS)], negative_prompt=None, width=side,
            height=side, num_inference_steps=step_count,
            guidance_scale=settings["guidance"], seeds=(seed,))

    backend.generate(params(99, 2))  # warm-up
    denoiser = getattr(backend.pipeline, "transformer", None) or backend.pipeline.unet
    attention = count_attention(denoiser)
    seconds = []
    for seed in range(seeds):
        begun = time.perf_counter()
        (image,) = backend.generate(params(seed, steps))
        seconds.append(time.perf_counter() - begun)
        image.save(out / f"{seed}.png")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"weight_bytes": weight_bytes(backend.pipeline), "peak_bytes": peak - before,
            "seconds_per_image": statistics.median(seconds), "load_seconds": loaded,
            "attention_calls": attention[0] / seeds,
            "seconds": seconds}


# ------------------------------------------------------------------------- the comparison

def quality(reference: Path, other: Path, seeds: int) -> tuple[float, float]:
    """Mean PSNR (dB) and mean SSIM of ``other``'s images against ``reference``'s."""
    import numpy as np
    from PIL import Image
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnrs, ssims = [], []
    for seed in range(seeds):
        a = np.asarray(Image.open(reference / f"{seed}.png").convert("RGB"))
        b = np.asarray(Image.open(other / f"{seed}.png").convert("RGB"))
        psnrs.append(math.inf if np.array_equal(a, b)
                     else peak_signal_noise_ratio(a, b, data_range=255))
        ssims.append(structural_similarity(a, b, channel_axis=2, data_range=255))
    return statistics.mean(psnrs), statistics.mean(ssims)


def megabytes(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["builtin", "flux"],
                        choices=["builtin", "flux"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch's CPU threads per option's process (1: steadier "
                             "timings on a shared machine)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "SOURCE", "FIELDS", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, source, fields, out = args.child
        result = run_option(model, source, json.loads(fields), args.seeds, args.threads,
                            Path(out))
        (Path(out) / "result.json").write_text(json.dumps(result))
        return 0

    from diffuserve.builtin import WEIGHTS_DIR
    from tests.support.tiny_gguf import write_gguf_transformer

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = {"builtin": str(WEIGHTS_DIR)}
        options = {"builtin": BUILTIN_OPTIONS, "flux": FLUX_OPTIONS}
        gguf = ""
        if "flux" in args.models:
            sources["flux"] = str(build_flux(root / "flux"))
            gguf = str(write_gguf_transformer(root / "flux", root / "flux-Q8_0.gguf"))
        for model in args.models:
            reference: Path | None = None
            for label, fields in options[model]:
                fields = {key: (gguf if value == "GGUF" else value)
                          for key, value in fields.items()}
                out = root / f"{model}-{len(rows)}"
                out.mkdir()
                subprocess.run([sys.executable, __file__, "--seeds", str(args.seeds),
                                "--threads", str(args.threads), "--child", model,
                                sources[model], json.dumps(fields), str(out)],
                               check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                result = json.loads((out / "result.json").read_text())
                if reference is None and "refused" not in result:
                    reference = out
                if "refused" not in result and reference is not None:
                    result["psnr"], result["ssim"] = quality(reference, out, args.seeds)
                rows.append({"model": model, "option": label, **result})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| model | option | weight bytes | peak memory | s / image | attention run | "
          "PSNR vs none | SSIM vs none |\n|---|---|---|---|---|---|---|---|")
    every = {row["model"]: row["attention_calls"] for row in reversed(rows)
             if "attention_calls" in row}
    for row in rows:
        if "refused" in row:
            print(f"| {row['model']} | {row['option']} | refused at load: "
                  f"{row['refused']} | | | | | |")
            continue
        same = math.isinf(row["psnr"]) and row["ssim"] == 1.0
        versus = "identical | identical" if same else \
            f"{row['psnr']:.1f} dB | {row['ssim']:.4f}"
        share = row["attention_calls"] / every[row["model"]] if every[row["model"]] else 1
        print(f"| {row['model']} | {row['option']} | {megabytes(row['weight_bytes'])} | "
              f"{megabytes(row['peak_bytes'])} | {row['seconds_per_image']:.3f} | "
              f"{100 * share:.0f} % | {versus} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

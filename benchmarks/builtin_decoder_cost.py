"""What a larger decoder would cost the built-in model on this CPU.

The built-in model's decoders (the autoencoder's decoder to its 64×64 feature map, then
the detail decoder to 256 px: ``decoder_features`` and ``DetailDecoder``) against
decoders of the usual shape for 16×16 latents with 16 channels: diffusers' ``Decoder``
upsampling four times to 256 px RGBA, at a few widths. One image at a time, median of
``--repeats`` calls after warm-up, on ``--threads`` threads (the server's own setting on a
2-core machine). The built-in model's whole 256² request takes about 0.34 s (README,
Performance), against a target of 0.4 s: the headroom a new decoder has.

    python benchmarks/builtin_decoder_cost.py [--repeats 20] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers.models.autoencoders.vae import Decoder

from diffuserve import builtin
from diffuserve.builtin.detail import decoder_features
from diffuserve.builtin.pipeline import EmojiPipeline

#: Channel widths from 256 px up to 16×16 (diffusers' order: the first is the output's).
WIDTHS = ((32, 64, 128, 128, 128), (32, 64, 128, 256, 256), (64, 128, 256, 256, 256))


def median_ms(call: Callable[[], object], repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            call()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def parameters(*modules: torch.nn.Module) -> float:
    return sum(p.numel() for module in modules for p in module.parameters()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    # Only the decoders run: no text encoder is loaded.
    pipe = EmojiPipeline.from_pretrained(str(builtin.WEIGHTS_DIR), dtype=torch.float32,
                                         text_encoder=None, tokenizer=None)
    latents = torch.randn(1, pipe.vae.config.latent_channels, 16, 16)

    def shipped() -> None:
        pipe.detail(*decoder_features(pipe.vae, latents))

    rows = [{"decoder": "built-in: autoencoder decoder + detail decoder",
             "params_m": parameters(pipe.vae.post_quant_conv, pipe.vae.decoder, pipe.detail),
             "ms": median_ms(shipped, args.repeats)}]
    wide = torch.randn(1, 16, 16, 16)
    for widths in WIDTHS:
        decoder = Decoder(in_channels=16, out_channels=4,
                          up_block_types=("UpDecoderBlock2D",) * len(widths),
                          block_out_channels=widths, layers_per_block=2,
                          norm_num_groups=8).eval()
        rows.append({"decoder": f"diffusers Decoder 16×16×16 → 256 px, widths {widths}",
                     "params_m": parameters(decoder),
                     "ms": median_ms(lambda d=decoder: d(wide), args.repeats)})
    for row in rows:
        print(f"{row['ms']:7.1f} ms  {row['params_m']:6.2f} M parameters  {row['decoder']}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Tiny, randomly initialised Stable Diffusion pipelines for offline tests.

Mirrors the ``get_dummy_components()`` helpers of diffusers' own test-suite, but
builds everything (tokenizers included) locally, so no Hugging Face Hub access is
needed. Each builder is deterministic (``torch.manual_seed(0)``), takes well under
a few seconds, and writes a folder of a few hundred KB that loads with
``DiffusionPipeline.from_pretrained`` and ``AutoPipelineForText2Image.from_pretrained``.

Usage for manual checks::

    python tests/support/tiny_pipelines.py /tmp/tiny-models  # -> /tmp/tiny-models/tiny-sd{,xl}
"""

from __future__ import annotations

import pathlib
import sys

__all__ = ["build_tiny_sd", "build_tiny_sdxl", "build_tiny_clip_tokenizer", "tiny_emoji_pipeline"]

# Shared by every tiny CLIP text encoder: ids must match the tokenizer below.
_VOCAB_SIZE = 1000
_BOS_TOKEN = "<|startoftext|>"
_EOS_TOKEN = "<|endoftext|>"


def build_tiny_clip_tokenizer():
    """A byte-level CLIPTokenizer with no merges (514 tokens), built offline.

    Stands in for the Hub's ``hf-internal-testing/tiny-random-clip`` tokenizer.
    Ids: 0..255 byte characters, 256..511 the same with ``</w>``,
    512 ``<|startoftext|>``, 513 ``<|endoftext|>`` (also used as pad/unk).
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab[_BOS_TOKEN] = len(vocab)
    vocab[_EOS_TOKEN] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        model_max_length=77,
        bos_token=_BOS_TOKEN,
        eos_token=_EOS_TOKEN,
        unk_token=_EOS_TOKEN,
        pad_token=_EOS_TOKEN,
    )


def _clip_text_config(tokenizer, hidden_size: int = 32, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    kwargs = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=_VOCAB_SIZE,
        hidden_act="gelu",
    )
    if projection_dim is not None:
        kwargs["projection_dim"] = projection_dim
    return CLIPTextConfig(**kwargs)


def _tiny_unet(**config):
    """diffusers' test UNet: two blocks of 4 and 8 channels, cross-attention in one."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        **config,
    )


def _tiny_vae(sample_size: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
        sample_size=sample_size,
    )


def _sd_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def build_tiny_sd(path: pathlib.Path) -> pathlib.Path:
    """Build and save a tiny SD 1.x ``StableDiffusionPipeline`` at ``path``."""
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    path = pathlib.Path(path)
    unet = _tiny_unet(cross_attention_dim=32, norm_num_groups=2)
    vae = _tiny_vae(sample_size=64)
    tokenizer = build_tiny_clip_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer))

    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=_sd_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_sdxl(path: pathlib.Path) -> pathlib.Path:
    """Build and save a tiny ``StableDiffusionXLPipeline`` at ``path``."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    path = pathlib.Path(path)
    text_hidden, text_2_hidden, projection_dim, time_embed_dim = 32, 32, 32, 8
    # diffusers' SDXL test uses (32, 64) and layers_per_block=2; this is ~50x smaller on disk.
    unet = _tiny_unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 2),
        # 6 add_time_ids * time_embed_dim + pooled text_encoder_2 projection
        projection_class_embeddings_input_dim=6 * time_embed_dim + projection_dim,
        cross_attention_dim=text_hidden + text_2_hidden,
        norm_num_groups=1,
    )
    vae = _tiny_vae(sample_size=128)
    tokenizer = build_tiny_clip_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer, hidden_size=text_hidden))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip_text_config(tokenizer, hidden_size=text_2_hidden, projection_dim=projection_dim)
    )
    tokenizer_2 = build_tiny_clip_tokenizer()

    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=_sd_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def tiny_emoji_pipeline(text_encoder, tokenizer, detail: bool = False):
    """A random EmojiPipeline (8×8 latents, a 16 px subject) around the real MiniLM
    ``text_encoder`` and ``tokenizer``; ``detail`` adds a detail decoder (a 64 px
    subject with alpha), untrained: it draws the 16 px subject enlarged, fully opaque.
    Seeded: the same call builds the same weights."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel

    from diffuserve.builtin.detail import DetailDecoder
    from diffuserve.builtin.pipeline import EmojiPipeline

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 32),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=384, layers_per_block=1,
                                attention_head_dim=8, norm_num_groups=8)

    vae = AutoencoderKL(block_out_channels=(8, 8), norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    return EmojiPipeline(unet=unet, vae=vae, scheduler=DPMSolverMultistepScheduler(),
                         text_encoder=text_encoder, tokenizer=tokenizer,
                         detail=DetailDecoder(in_channels=8, block_out_channels=(8, 8),
                                              layers_per_block=1) if detail else None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python tests/support/tiny_pipelines.py OUTPUT_DIR", file=sys.stderr)
        return 2
    out = pathlib.Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, build in (("tiny-sd", build_tiny_sd), ("tiny-sdxl", build_tiny_sdxl)):
        folder = build(out / name)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{name}: {folder} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tiny, randomly initialised pipelines of the 2026 open model families, built offline.

One builder per family: FLUX.1 (dev, schnell, Fill, Kontext), FLUX.2 (dev, klein and
klein base), Stable Diffusion 3.5, Qwen-Image (and its Edit and Edit-Plus), Z-Image
(``FAMILIES`` names them). Each writes,
with ``save_pretrained``, a folder that ``DiffusionPipeline.from_pretrained`` loads as it
loads the real model: the same pipeline class, the same kinds of components (text
encoders, tokenizers and processors included), a few KB to a few MB of random weights.

The architectures keep what the server can see of the real ones (a VAE that scales by 8,
2x2 packed latents, text encoders deep enough for the hidden-state layers each pipeline
reads by default, the same guidance embedding, scheduler settings of the real model
cards) and shrink everything else. Tokenizers and processors are made offline, in
``tests/support/tiny_tokenizers.py``.

Like ``tests/support/tiny_pipelines.py``, after the configs of diffusers' own
``get_dummy_components()``. Seeded: the same call writes the same weights.

Three folders name a processor that transformers 5 loads only with torchvision:
FLUX.2 dev's ``PixtralProcessor`` and Qwen-Image-Edit(-Plus)'s ``Qwen2VLProcessor`` (its
video processor). They are written file by file as the model repos have them, so they
load as the real ones do; where torchvision is missing (it is here: PyPI's build is for
CUDA torch), ``load_pipeline`` loads them with stand-ins made from the same files.

Usage for manual checks::

    python -m tests.support.tiny_families /tmp/tiny-families [NAME ...]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.tiny_pipelines import build_tiny_clip_tokenizer
from tests.support.tiny_tokenizers import (
    QWEN2_VL_CHAT_TEMPLATE,
    build_tiny_mistral_tokenizer,
    build_tiny_qwen_tokenizer,
    build_tiny_t5_tokenizer,
    has_torchvision,
    qwen2_vl_processor_without_video,
    write_pixtral_processor,
    write_qwen2_vl_processor,
)

__all__ = [
    "FAMILIES",
    "build_tiny_flux1_dev",
    "build_tiny_flux1_schnell",
    "build_tiny_flux1_fill",
    "build_tiny_flux1_kontext",
    "build_tiny_flux2_dev",
    "build_tiny_flux2_klein",
    "build_tiny_flux2_klein_base",
    "build_tiny_sd35",
    "build_tiny_qwen_image",
    "build_tiny_qwen_image_edit",
    "build_tiny_qwen_image_edit_plus",
    "build_tiny_z_image",
    "load_pipeline",
]


def load_pipeline(folder: Path, pipeline_class: Any = None, **kwargs: Any) -> Any:
    """``pipeline_class.from_pretrained(folder, **kwargs)`` (``DiffusionPipeline`` by
    default), with stand-ins for the processors that need torchvision where it is missing.

    Without torchvision, transformers 5 loads neither a ``PixtralProcessor`` (FLUX.2 dev's
    ``tokenizer``: diffusers finds a placeholder class with no ``from_pretrained``, and
    refuses a passed replacement, whose type it cannot check against the placeholder) nor
    a ``Qwen2VLProcessor`` (Qwen-Image-Edit's ``processor``: its video processor needs
    torchvision). The stand-ins come from the same files: FLUX.2 dev's tokenizer, set after
    loading (``Flux2Pipeline`` only calls ``apply_chat_template`` on it), and a
    ``Qwen2VLProcessor`` without a video processor (the edit pipelines pass no videos).
    """
    from diffusers import DiffusionPipeline
    from transformers import AutoTokenizer

    folder = Path(folder)
    pipeline_class = pipeline_class or DiffusionPipeline
    after_load: dict[str, Any] = {}
    if not has_torchvision():
        index = json.loads((folder / "model_index.json").read_text())
        for name, spec in index.items():
            if name in kwargs or not isinstance(spec, list):
                continue
            if spec[1] == "PixtralProcessor":
                kwargs[name] = None
                after_load[name] = AutoTokenizer.from_pretrained(folder / name)
            elif spec[1] == "Qwen2VLProcessor":
                kwargs[name] = qwen2_vl_processor_without_video(folder / name)
    pipe = pipeline_class.from_pretrained(folder, **kwargs)
    if after_load:
        pipe.register_modules(**after_load)
    return pipe


def _set_component(path: Path, name: str, library: str, class_name: str) -> None:
    """Name in ``model_index.json`` a component that was saved beside the pipeline."""
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text())
    index[name] = [library, class_name]
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


# -------------------------------------------------------------------------- text models

def _clip_text_model(tokenizer: Any, hidden_size: int = 32, with_projection: bool = False) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), hidden_size=hidden_size,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        projection_dim=hidden_size, hidden_act="gelu",
    )
    torch.manual_seed(0)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _t5_encoder(tokenizer: Any, d_model: int) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    return T5EncoderModel(config)


def _qwen3_config(tokenizer: Any, num_layers: int) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=16,
        num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )


def _qwen2_5_vl(tokenizer: Any) -> Any:
    """Qwen2.5-VL with a 2-layer, 16-wide language model and a 1-block vision tower."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 16,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
            "max_position_embeddings": 32768, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None, "eos_token_id": ids("<|im_end|>"),
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2],
                                "rope_theta": 1000000.0},
        },
        # patch 14, temporal patch 2, merge 2: the real tower's, which the processor follows.
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": 16, "fullatt_block_indexes": [0]},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


# ------------------------------------------------------------------------------ VAEs

def _vae_kl(latent_channels: int, scaling_factor: float, shift_factor: float | None) -> Any:
    """A 4-block AutoencoderKL of 4 channels: scales by 8 like the real ones."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, latent_channels=latent_channels, norm_num_groups=1, sample_size=64,
        use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=scaling_factor, shift_factor=shift_factor,
    )


def _vae_flux2() -> Any:
    import torch
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(0)
    return AutoencoderKLFlux2(
        in_channels=3, out_channels=3, block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, latent_channels=4, norm_num_groups=1, sample_size=64,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def _vae_qwen_image() -> Any:
    """The Wan-style 3-D causal VAE (5-D tensors), 4 latent channels, scales by 8."""
    import torch
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    return AutoencoderKLQwenImage(
        base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )


# ------------------------------------------------------------------------- schedulers

def _flow_match(**config: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **config)


def _flux_scheduler() -> Any:
    """FLUX.1 dev's: resolution-dependent shift."""
    return _flow_match(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                       base_image_seq_len=256, max_image_seq_len=4096)


# ---------------------------------------------------------------------------- FLUX.1

def _flux1(path: Path, pipeline: str, *, guidance_embeds: bool, fill: bool = False,
           scheduler: Any = None) -> Path:
    import diffusers
    import torch
    from diffusers import FluxTransformer2DModel

    latent_channels = 4
    packed = latent_channels * 4  # 2x2 patches
    tokenizer, tokenizer_2 = build_tiny_clip_tokenizer(), build_tiny_t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        # Fill: noise, masked image (both packed latents) and the 8x8 mask of each
        # latent pixel packed 2x2; out: the packed latents alone.
        in_channels=packed * 2 + 8 * 8 * 4 if fill else packed,
        out_channels=packed,
        num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    components: dict[str, Any] = dict(
        scheduler=scheduler or _flux_scheduler(),
        vae=_vae_kl(latent_channels, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_clip_text_model(tokenizer), tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, d_model=32), tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    if not fill:
        components.update(image_encoder=None, feature_extractor=None)
    getattr(diffusers, pipeline)(**components).save_pretrained(path, safe_serialization=True)
    return Path(path)


def build_tiny_flux1_dev(path: Path) -> Path:
    """``FluxPipeline`` as FLUX.1 [dev]: guidance-distilled (a guidance embedding, no CFG)."""
    return _flux1(path, "FluxPipeline", guidance_embeds=True)


def build_tiny_flux1_schnell(path: Path) -> Path:
    """``FluxPipeline`` as FLUX.1 [schnell]: no guidance embedding, a fixed shift of 1."""
    return _flux1(path, "FluxPipeline", guidance_embeds=False,
                  scheduler=_flow_match(shift=1.0, use_dynamic_shifting=False))


def build_tiny_flux1_fill(path: Path) -> Path:
    """``FluxFillPipeline`` as FLUX.1 Fill [dev]: image and mask in the transformer's input."""
    return _flux1(path, "FluxFillPipeline", guidance_embeds=True, fill=True)


def build_tiny_flux1_kontext(path: Path) -> Path:
    """``FluxKontextPipeline`` as FLUX.1 Kontext [dev]: the image's latents join the sequence."""
    return _flux1(path, "FluxKontextPipeline", guidance_embeds=True)


# ---------------------------------------------------------------------------- FLUX.2

def _flux2_transformer(guidance_embeds: bool, text_hidden: int) -> Any:
    import torch
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(0)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * 4, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2,
        # three hidden-state layers of the text encoder, concatenated
        joint_attention_dim=3 * text_hidden, timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=guidance_embeds,
    )


def build_tiny_flux2_dev(path: Path) -> Path:
    """``Flux2Pipeline`` as FLUX.2 [dev]: Mistral Small 3.1 text encoder, guidance-distilled.

    The language model has 30 layers (16 wide) because the pipeline stacks hidden states
    10, 20 and 30 by default.
    """
    import torch
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = build_tiny_mistral_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    config = Mistral3Config(
        text_config={
            "model_type": "mistral", "vocab_size": len(tokenizer), "hidden_size": 16,
            "intermediate_size": 16, "num_hidden_layers": 30, "num_attention_heads": 2,
            "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 4096,
            "sliding_window": None, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "head_dim": 8, "intermediate_size": 16,
            "image_size": 1540, "patch_size": 14, "num_channels": 3,
        },
        image_token_index=ids("[IMG]"), spatial_merge_size=2, vision_feature_layer=-1,
        multimodal_projector_bias=False, projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    text_encoder = Mistral3ForConditionalGeneration(config).eval()
    pipe = Flux2Pipeline(
        scheduler=_flow_match(shift=3.0, use_dynamic_shifting=True),
        vae=_vae_flux2(), text_encoder=text_encoder, tokenizer=None,
        transformer=_flux2_transformer(guidance_embeds=True, text_hidden=16),
    )
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    write_pixtral_processor(path / "tokenizer", tokenizer)
    _set_component(path, "tokenizer", "transformers", "PixtralProcessor")
    return path


def _flux2_klein(path: Path, is_distilled: bool) -> Path:
    import torch
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3ForCausalLM

    tokenizer = build_tiny_qwen_tokenizer()
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(_qwen3_config(tokenizer, num_layers=27)).eval()
    pipe = Flux2KleinPipeline(
        scheduler=_flow_match(shift=3.0, use_dynamic_shifting=True),
        vae=_vae_flux2(), text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=_flux2_transformer(guidance_embeds=False, text_hidden=16),
        is_distilled=is_distilled,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


def build_tiny_flux2_klein(path: Path) -> Path:
    """``Flux2KleinPipeline`` as FLUX.2 [klein] 4B: Qwen3 text encoder, step-distilled
    (``is_distilled``: no CFG whatever the guidance scale).

    27 Qwen3 layers (16 wide): the pipeline stacks hidden states 9, 18 and 27. The same
    folder serves ``Flux2KleinInpaintPipeline`` through ``from_pipe``.
    """
    return _flux2_klein(path, is_distilled=True)


def build_tiny_flux2_klein_base(path: Path) -> Path:
    """``Flux2KleinPipeline`` as FLUX.2 [klein] base 4B: the undistilled one, real CFG."""
    return _flux2_klein(path, is_distilled=False)


# ------------------------------------------------------------------- Stable Diffusion 3.5

def build_tiny_sd35(path: Path) -> Path:
    """``StableDiffusion3Pipeline`` as SD 3.5 Medium: two CLIPs and a T5, MMDiT-X.

    The CLIPs' hidden states (32 + 32) are padded to T5's width (64), and their pooled
    projections concatenated (64). 16 latent channels, as the real VAE's:
    ``StableDiffusion3InpaintPipeline`` takes a transformer of 16 input channels (or 33).
    """
    import torch
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer, tokenizer_3 = build_tiny_clip_tokenizer(), build_tiny_t5_tokenizer()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
        caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=64,
        dual_attention_layers=(0,), qk_norm="rms_norm",
    )
    pipe = StableDiffusion3Pipeline(
        scheduler=_flow_match(shift=3.0),
        vae=_vae_kl(16, scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=_clip_text_model(tokenizer, with_projection=True), tokenizer=tokenizer,
        text_encoder_2=_clip_text_model(tokenizer, with_projection=True),
        tokenizer_2=build_tiny_clip_tokenizer(),
        text_encoder_3=_t5_encoder(tokenizer_3, d_model=64), tokenizer_3=tokenizer_3,
        transformer=transformer, image_encoder=None, feature_extractor=None,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


# --------------------------------------------------------------------------- Qwen-Image

def _qwen_image_transformer() -> Any:
    import torch
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=4 * 4, out_channels=4, num_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def _qwen_image_scheduler() -> Any:
    """Qwen-Image's: exponential time shift by resolution, a terminal sigma of 0.02."""
    import math

    return _flow_match(shift=1.0, use_dynamic_shifting=True, base_shift=math.log(3),
                       max_shift=math.log(3), base_image_seq_len=256, max_image_seq_len=8192,
                       shift_terminal=0.02, time_shift_type="exponential")


def _qwen_image(path: Path, pipeline: str) -> Path:
    import diffusers

    path = Path(path)
    tokenizer = build_tiny_qwen_tokenizer(QWEN2_VL_CHAT_TEMPLATE)
    components: dict[str, Any] = dict(
        scheduler=_qwen_image_scheduler(), vae=_vae_qwen_image(),
        text_encoder=_qwen2_5_vl(tokenizer), tokenizer=tokenizer,
        transformer=_qwen_image_transformer(),
    )
    edit = pipeline != "QwenImagePipeline"
    if edit:
        components["processor"] = None
    getattr(diffusers, pipeline)(**components).save_pretrained(path, safe_serialization=True)
    if edit:
        write_qwen2_vl_processor(path / "processor")
        _set_component(path, "processor", "transformers", "Qwen2VLProcessor")
    return path


def build_tiny_qwen_image(path: Path) -> Path:
    """``QwenImagePipeline``: Qwen2.5-VL text encoder, 3-D VAE, true CFG."""
    return _qwen_image(path, "QwenImagePipeline")


def build_tiny_qwen_image_edit(path: Path) -> Path:
    """``QwenImageEditPipeline``: one input image, seen by Qwen2.5-VL and the VAE."""
    return _qwen_image(path, "QwenImageEditPipeline")


def build_tiny_qwen_image_edit_plus(path: Path) -> Path:
    """``QwenImageEditPlusPipeline`` (Edit-2509/2511): one to three input images."""
    return _qwen_image(path, "QwenImageEditPlusPipeline")


# ----------------------------------------------------------------------------- Z-Image

def build_tiny_z_image(path: Path) -> Path:
    """``ZImagePipeline`` as Z-Image-Turbo: Qwen3 text encoder, a single-stream DiT."""
    import torch
    from diffusers import ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    tokenizer = build_tiny_qwen_tokenizer()
    torch.manual_seed(0)
    text_encoder = Qwen3Model(_qwen3_config(tokenizer, num_layers=2)).eval()
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=1,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16,
        axes_dims=[8, 4, 4], axes_lens=[1024, 512, 512],
    )
    # Created with torch.empty: fixed here so the saved weights are deterministic.
    with torch.no_grad():
        transformer.x_pad_token.fill_(1.0)
        transformer.cap_pad_token.fill_(1.0)
    pipe = ZImagePipeline(
        scheduler=_flow_match(shift=3.0), vae=_vae_kl(4, scaling_factor=0.3611,
                                                      shift_factor=0.1159),
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


FAMILIES: dict[str, Callable[[Path], Path]] = {
    "flux1-dev": build_tiny_flux1_dev,
    "flux1-schnell": build_tiny_flux1_schnell,
    "flux1-fill": build_tiny_flux1_fill,
    "flux1-kontext": build_tiny_flux1_kontext,
    "flux2-dev": build_tiny_flux2_dev,
    "flux2-klein": build_tiny_flux2_klein,
    "flux2-klein-base": build_tiny_flux2_klein_base,
    "sd35": build_tiny_sd35,
    "qwen-image": build_tiny_qwen_image,
    "qwen-image-edit": build_tiny_qwen_image_edit,
    "qwen-image-edit-plus": build_tiny_qwen_image_edit_plus,
    "z-image": build_tiny_z_image,
}
"""Family name -> builder; each writes ``DiffusionPipeline.from_pretrained``'s folder."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m tests.support.tiny_families OUTPUT_DIR [NAME ...]",
              file=sys.stderr)
        return 2
    out, names = Path(argv[0]), argv[1:] or list(FAMILIES)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        start = time.perf_counter()
        folder = FAMILIES[name](out / name)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{name}: {folder} ({size / 1024:.0f} KiB, {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

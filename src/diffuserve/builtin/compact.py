"""The built-in model's UNet stored with 8-bit weights: half the size on disk, the same
model in memory.

Every convolution and linear weight is kept as int8 with one float scale per output
channel (symmetric, round to nearest: the largest weight of a channel is ±127 steps);
biases, norms and the small tensors stay in half precision. Loading multiplies the
scales back, so the model runs in whatever precision it is loaded in, as any diffusers
UNet. ``save_pretrained`` writes this form, ``from_pretrained`` reads it (and an
ordinary UNet folder too), so a pipeline folder declares the class in its
``model_index.json`` like any other component.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

# diffusers tells how to load a component by looking its base classes up by name in the
# component's own module: ModelMixin must be found here.
from diffusers.models.modeling_utils import ModelMixin as ModelMixin
from safetensors.torch import load_file, save_file

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
#: Suffix of the per-channel scale stored beside an int8 weight.
SCALE_SUFFIX = ".int8_scale"
#: Weights smaller than this stay in half precision: quantising them saves nothing.
SMALLEST_QUANTISED = 1024


def quantise(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every weight of two or more dimensions (of at least
    SMALLEST_QUANTISED values) as int8 and its per-output-channel scale; the rest half
    precision."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if tensor.ndim >= 2 and tensor.numel() >= SMALLEST_QUANTISED:
            rows = tensor.detach().float().reshape(tensor.shape[0], -1)
            scale = rows.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            steps = (rows / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
            out[name] = steps.reshape(tensor.shape).contiguous()
            out[name + SCALE_SUFFIX] = scale
        else:
            out[name] = tensor.detach().to(torch.float16).contiguous()
    return out


def dequantise(stored: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
               ) -> dict[str, torch.Tensor]:
    """The weights of a :func:`quantise`\\ d state in ``dtype``."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in stored.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = stored.get(name + SCALE_SUFFIX)
        if scale is not None:
            shape = (-1,) + (1,) * (tensor.ndim - 1)
            state[name] = (tensor.float() * scale.float().view(shape)).to(dtype)
        else:
            state[name] = tensor.to(dtype)
    return state


class CompactUNet2DConditionModel(UNet2DConditionModel):
    """A UNet2DConditionModel saved with 8-bit weights (see the module docstring)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        """The UNet of a local folder (a ``subfolder`` of it, if given), in ``dtype`` (or
        ``torch_dtype``; float32 by default). Other loading options do not apply to a
        model this small and are ignored."""
        folder = Path(str(pretrained_model_name_or_path)) / (kwargs.get("subfolder") or "")
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype") or torch.float32
        model: Any = cls.from_config(cls.load_config(folder))  # type: ignore[no-untyped-call]
        model.load_state_dict(dequantise(load_file(folder / WEIGHTS_NAME), dtype))
        # torch's own cast: diffusers' ``to`` warns on every cast of a built model.
        torch.nn.Module.to(model, dtype)
        return model.eval()

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> None:
        """Its config and its 8-bit weights in ``save_directory``."""
        folder = Path(str(save_directory))
        folder.mkdir(parents=True, exist_ok=True)
        model: Any = self
        model.save_config(folder)
        save_file(quantise(model.state_dict()), folder / WEIGHTS_NAME,
                  metadata={"format": "pt", "quantisation": "int8, per output channel"})

"""LoRA adapters in the models file: a model's declared adapters, the adapters a model
applies by default, and models derived from another (``base``) that share its weights.

```toml
[[models]]
name = "sdxl"
source = "stabilityai/stable-diffusion-xl-base-1.0"
adapters_dir = "loras/sdxl"          # every *.safetensors in it, named by its stem
[[models.adapters]]
name = "pixel"
source = "owner/repo"                # Hub id, folder, or .safetensors file
weight_name = "pixel.safetensors"    # optional
scale = 0.8                          # the default scale

[[models]]
name = "pixel-art"                   # a public model drawn by sdxl with its adapter
base = "sdxl"
lora = [{ name = "pixel", scale = 0.8 }]
steps = 25
```
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: What an adapter's name may be: a file stem, never a path or a URL.
ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: The scales an adapter may be given (0: drawn as if it were absent).
MIN_ADAPTER_SCALE, MAX_ADAPTER_SCALE = -4.0, 4.0
#: The adapters one request (or one derived model) may stack.
MAX_ADAPTERS_PER_REQUEST = 8


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class AdapterSpec(BaseModel):
    """One declared adapter of a model (``[[models.adapters]]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=ADAPTER_NAME_PATTERN,
                      description="the name requests use (letters, digits, . _ -)")
    source: str = Field(min_length=1,
                        description="Hugging Face Hub id, folder, or .safetensors file")
    weight_name: str | None = Field(
        default=None, min_length=1,
        description="the weights file within a Hub repository or folder")
    scale: float = Field(default=1.0, ge=MIN_ADAPTER_SCALE, le=MAX_ADAPTER_SCALE,
                         description="the scale a request that names no scale gets")

    _finite_scale = field_validator("scale")(_finite)


class LoraChoice(BaseModel):
    """An adapter chosen by name, at a scale (None: the adapter's default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=ADAPTER_NAME_PATTERN)
    scale: float | None = Field(default=None, ge=MIN_ADAPTER_SCALE, le=MAX_ADAPTER_SCALE)

    @field_validator("scale")
    @classmethod
    def _finite_scale(cls, value: float | None) -> float | None:
        return None if value is None else _finite(value)


#: What a derived model (``base = …``) may set of its own: how OpenAI's knobs drive the
#: shared weights, never where the weights are or how they run.
DERIVED_FIELDS = frozenset({
    "name", "base", "lora", "aliases", "edit_model", "steps", "hd_steps", "min_steps",
    "guidance_scale", "vivid_guidance_scale", "natural_guidance_scale", "negative_prompt",
    "prompt_revision",
})


def derive(base: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A derived model's fields: ``base``'s (a served model's, as a dict) with
    ``entry``'s own on top; the base's aliases stay the base's."""
    own = set(entry) - DERIVED_FIELDS
    if own:
        raise ValueError(
            f"model {entry.get('name')!r} is derived from {entry['base']!r} and shares its "
            f"weights, so it cannot set {sorted(own)} (it may set "
            f"{sorted(DERIVED_FIELDS - {'name', 'base'})})")
    if base.get("base") is not None:
        raise ValueError(f"model {entry.get('name')!r}: its base {entry['base']!r} is "
                         "itself derived; name the model it derives from")
    return {**base, "aliases": (), **entry, "base": base["name"]}

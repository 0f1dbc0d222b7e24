"""Tiny random LoRA adapters for the tests' tiny pipelines, written as diffusers writes
them (``save_lora_weights``), so the server loads them as it would a downloaded one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The attention projections an adapter changes (every family's denoiser has them).
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def write_tiny_lora(pipeline: Any, folder: Path, name: str, *, seed: int = 0,
                    rank: int = 4, targets: list[str] | None = None,
                    text_encoder: bool = False) -> Path:
    """A random adapter for ``pipeline``'s denoiser (its ``unet`` or ``transformer``) on
    the layers named ``targets`` (default :data:`TARGETS`, those the denoiser has), and
    with ``text_encoder`` on its text encoder's attention projections too, written to
    ``folder/name.safetensors``; the pipeline is left as it was."""
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    part = "unet" if getattr(pipeline, "unet", None) is not None else "transformer"
    denoiser = getattr(pipeline, part)
    names = {module_name.rsplit(".", 1)[-1] for module_name, _ in denoiser.named_modules()}
    targets = [target for target in targets or TARGETS
               if target.rsplit(".", 1)[-1] in names or target in names]
    torch.manual_seed(seed)
    # Random (not zero) B matrices: the adapter changes what the pipeline draws.
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                        init_lora_weights=False)
    denoiser.add_adapter(config, adapter_name="tiny_lora_writer")
    parts = {f"{part}_lora_layers": denoiser}
    if text_encoder:
        pipeline.text_encoder.add_adapter(
            LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                       target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
            adapter_name="tiny_lora_writer")
        parts["text_encoder_lora_layers"] = pipeline.text_encoder
    try:
        # Large enough to change a 2-step tiny drawing clearly, small enough to stay finite.
        layers = {argument: {key: value * 4.0 for key, value in convert_state_dict_to_diffusers(
                      get_peft_model_state_dict(model, adapter_name="tiny_lora_writer")).items()}
                  for argument, model in parts.items()}
        folder.mkdir(parents=True, exist_ok=True)
        type(pipeline).save_lora_weights(str(folder), **layers,
                                         weight_name=f"{name}.safetensors")
    finally:
        for model in parts.values():  # diffusers' models and transformers' name it apart
            delete = getattr(model, "delete_adapters", None) or model.delete_adapter
            delete("tiny_lora_writer")
    return folder / f"{name}.safetensors"


def write_tiny_loras(model_folder: Path, folder: Path, names: list[str]) -> list[Path]:
    """Adapters ``names`` (each of its own random weights) for the tiny pipeline saved in
    ``model_folder``."""
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(str(model_folder))
    return [write_tiny_lora(pipeline, folder, name, seed=index)
            for index, name in enumerate(names)]


def write_adapter_models(root: Path, model: Path, *, settings: str = "") -> dict[str, Path]:
    """The tests' served adapters, in ``root``: ``model`` (a tiny SD folder) served as
    ``sd`` with an adapters folder (``pixel``, ``ink``), a declared adapter (``clay``,
    default scale 0.5) and ``settings`` (more lines of its table); ``pixel-sd`` derived
    from it (``pixel`` at 0.8); and in ``spare`` adapters not in the folder yet
    (``clay``, ``late``). Returns the folders by name (``root``, ``loras``, ``spare``)."""
    write_tiny_loras(model, root / "loras", ["pixel", "ink"])
    write_tiny_loras(model, root / "spare", ["clay", "late"])
    (root / "models.toml").write_text(f"""
[[models]]
name = "sd"
source = "{model}"
steps = 2
adapters_dir = "loras"
{settings}

[[models.adapters]]
name = "clay"
source = "spare/clay.safetensors"
scale = 0.5

[[models]]
name = "pixel-sd"
base = "sd"
lora = [{{ name = "pixel", scale = 0.8 }}]
""")
    return {"root": root, "loras": root / "loras", "spare": root / "spare"}

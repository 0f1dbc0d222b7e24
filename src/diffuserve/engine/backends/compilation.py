"""``torch.compile`` for a loaded diffusers pipeline: its denoiser and VAE decoder.

Compiling trades start-up time for faster steps. Inductor's *freezing* treats the weights
as constants (folded into the graph), which is what makes a compiled UNet faster than
eager on a CPU at all; ``reduce-overhead`` adds CUDA graphs on a GPU. The compiled
kernels are cached on disk (``TORCHINDUCTOR_CACHE_DIR``, by default under the user's
cache folder), so a restart traces the model again but does not recompile it.

A denoiser that takes LoRA adapters is compiled otherwise: its QKV projections stay
apart (a fused projection would bypass the adapters' layers on them) and its weights stay
inputs of the graph, not frozen constants (adapters are swapped into them in place).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

def compile_cache_dir() -> Path:
    """Where compiled kernels are kept across restarts: ``TORCHINDUCTOR_CACHE_DIR`` when
    set, else ``compile/`` in diffuserve's user cache folder (set for this process)."""
    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured:
        return Path(configured)
    import platformdirs

    folder = Path(platformdirs.user_cache_dir("diffuserve")) / "compile"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return folder


def compile_options(mode: str) -> dict[str, Any]:
    """The keyword arguments of ``torch.compile`` for a model's ``compile`` setting (its
    values other than "off" are torch.compile's modes)."""
    return {"mode": mode}


def unfrozen(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for torch.compile with inductor's freezing off for this module alone
    (a mode becomes the inductor options it stands for: torch.compile takes one or the
    other), whatever the process-wide setting."""
    if "mode" not in options:  # another backend: nothing frozen
        return options
    from torch._inductor import list_mode_options

    rest = {key: value for key, value in options.items() if key != "mode"}
    return {**rest, "options": {**list_mode_options(options["mode"]), "freezing": False}}


def compile_pipeline(pipeline: Any, mode: str, device: str, *,
                     adapters: bool = False) -> list[str]:
    """Compile ``pipeline``'s denoiser and VAE decoder in place (they stay the same
    modules, so everything that reads their config still does); returns what was
    compiled. The cheap wins diffusers offers come first: fused QKV projections (not
    where the denoiser takes ``adapters``) and, on a GPU, channels-last UNet and VAE."""
    import torch
    from torch._inductor import config as inductor

    compile_cache_dir()
    inductor.freezing = True
    if device == "cpu":
        # Weights pre-packed for oneDNN cannot be pickled, so the kernel cache would skip
        # every graph holding them and each restart would compile again; measured on the
        # built-in model, the steps are no slower without.
        inductor.cpp.weight_prepack = False
    compiled: list[str] = []
    for name in ("unet", "transformer"):
        denoiser = getattr(pipeline, name, None)
        if not isinstance(denoiser, torch.nn.Module):
            continue
        fused = ""
        fuse = None if adapters else getattr(denoiser, "fuse_qkv_projections", None)
        if fuse is not None:
            try:
                fuse()
                fused = " (fused QKV projections)"
            except Exception:  # an attention layout diffusers cannot fuse: left as is
                logger.debug("QKV projections of %s not fused", name, exc_info=True)
        if device == "cuda" and name == "unet":
            denoiser.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        options = compile_options(mode)
        denoiser.compile(**(unfrozen(options) if adapters else options))
        compiled.append(name + fused + (" (weights not frozen, for adapters)"
                                        if adapters else ""))
    decoder = getattr(getattr(pipeline, "vae", None), "decoder", None)
    if isinstance(decoder, torch.nn.Module):
        if device == "cuda":
            decoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        decoder.compile(**compile_options(mode))
        compiled.append("vae.decoder")
    return compiled

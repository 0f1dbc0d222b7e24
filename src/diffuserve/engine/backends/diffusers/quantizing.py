"""Quantised weights at load: ``quantize`` through diffusers' pipeline quantisation config,
and ``transformer = "….gguf"``, a GGUF file as the denoiser.

``quantize`` applies to the denoiser (``transformer`` or ``unet``) and to the pipeline's
LLM text encoders (T5, Qwen2.5-VL, Mistral, Qwen3: every transformers text encoder but
CLIP's, which are small and whose pooled output the image depends on most):

- ``int8``: torchao's int8 weight-only (per row), on every device, the CPU included;
- ``fp8``: torchao's float8 (e4m3) weight-only: weights stored in 8 bits, computed in the
  model's dtype, on every device where torchao's float8 tensors run (the CPU included);
- ``int4``: torchao's int4 weight-only (groups of 128, tinygemm's layout), CUDA and
  bfloat16 only;
- ``nf4``: bitsandbytes' 4-bit NormalFloat, CUDA only.

torchao quantises only linear layers. A pipeline whose own loader ignores diffusers'
quantisation config (the built-in model's compact UNet) has its denoiser quantised in
place after loading, by torchao's ``quantize_``; nf4 cannot be applied that way.

What cannot run on the device, or without its package, is refused before anything is
loaded, with one line that says what to do.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from diffuserve.config import ModelSpec
from diffuserve.engine.errors import ModelLoadFailed

logger = logging.getLogger(__name__)

#: The ``quantize`` values torchao does.
TORCHAO_TYPES = frozenset({"int8", "fp8", "int4"})

#: What to install for each package the options need.
INSTALL = "pip install 'diffuserve[quantize]'"


def refused(spec: ModelSpec, why: str) -> ModelLoadFailed:
    """The one-line refusal of a model's weight option."""
    return ModelLoadFailed(f"Model {spec.name!r}: {why}")


def check_quantize(spec: ModelSpec, device: str) -> None:
    """Refuse what ``quantize`` and ``transformer`` cannot do on ``device``, or without
    their packages, before the weights are read."""
    kind = spec.quantize
    if kind in TORCHAO_TYPES and not _installed("torchao"):
        raise refused(spec, f"quantize = {kind!r} needs torchao, which is not installed "
                            f"({INSTALL}).")
    if kind == "nf4":
        if device != "cuda":
            raise refused(spec, f"quantize = \"nf4\" needs a CUDA device (bitsandbytes' "
                                f"4-bit layers), and the model runs on {device}; use "
                                "\"int8\" or \"fp8\" there.")
        if not _installed("bitsandbytes"):
            raise refused(spec, "quantize = \"nf4\" needs bitsandbytes, which is not "
                                f"installed ({INSTALL}).")
    if kind == "int4" and device != "cuda":
        raise refused(spec, f"quantize = \"int4\" needs a CUDA device (torchao's int4 "
                            f"kernels), and the model runs on {device}; use \"int8\" or "
                            "\"fp8\" there.")
    if spec.transformer is not None and not _installed("gguf"):
        raise refused(spec, f"transformer = {spec.transformer!r} needs the gguf package, "
                            f"which is not installed ({INSTALL}).")


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def denoiser_name(index: dict[str, Any]) -> str | None:
    """The pipeline's denoiser component in its ``model_index.json``: ``transformer`` or
    ``unet``."""
    for name in ("transformer", "unet"):
        if _component_class(index, name) is not None:
            return name
    return None


def llm_text_encoders(index: dict[str, Any]) -> list[str]:
    """The pipeline's text encoders that are language models (transformers' classes but
    CLIP's)."""
    names = []
    for name, entry in index.items():
        if not name.startswith("text_encoder") or not isinstance(entry, list) \
                or len(entry) != 2:
            continue
        library, class_name = entry
        if library == "transformers" and isinstance(class_name, str) \
                and not class_name.startswith("CLIP"):
            names.append(name)
    return sorted(names)


def _component_class(index: dict[str, Any], name: str) -> str | None:
    entry = index.get(name)
    if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str):
        return entry[1]
    return None


def torchao_type(kind: str) -> Any:
    """torchao's configuration for ``quantize = kind`` (int8, fp8 or int4)."""
    from torchao.quantization import (
        Float8WeightOnlyConfig,
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
    )

    if kind == "int8":
        return Int8WeightOnlyConfig()
    if kind == "fp8":
        return Float8WeightOnlyConfig()
    return Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")


def quantization_config(spec: ModelSpec, index: dict[str, Any], dtype: Any) -> Any:
    """diffusers' ``PipelineQuantizationConfig`` for ``spec.quantize``: the denoiser
    through diffusers' config class, the LLM text encoders through transformers'."""
    import diffusers
    import transformers
    from diffusers.quantizers.pipe_quant_config import PipelineQuantizationConfig

    kind = spec.quantize
    assert kind is not None
    denoiser = denoiser_name(index)
    encoders = llm_text_encoders(index)

    def config(library: Any) -> Any:
        if kind == "nf4":
            return library.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        return library.TorchAoConfig(torchao_type(kind))

    mapping: dict[str, Any] = {}
    if denoiser is not None and spec.transformer is None:
        mapping[denoiser] = config(diffusers)
    for name in encoders:
        mapping[name] = config(transformers)
    return PipelineQuantizationConfig(quant_mapping=mapping) if mapping else None


def quantize_denoiser_in_place(pipeline: Any, spec: ModelSpec) -> bool:
    """Quantise ``pipeline``'s denoiser with torchao's ``quantize_`` where loading left it
    as it was (a pipeline whose own loader ignores diffusers' config); True if it did."""
    import torch

    kind = spec.quantize
    if kind is None or spec.transformer is not None:
        return False
    denoiser = getattr(pipeline, "transformer", None) or getattr(pipeline, "unet", None)
    if not isinstance(denoiser, torch.nn.Module):
        raise refused(spec, f"quantize = {kind!r}: {type(pipeline).__name__} has no "
                            "denoiser (transformer or unet) to quantise.")
    if getattr(denoiser, "hf_quantizer", None) is not None:
        return False
    if kind not in TORCHAO_TYPES:
        raise refused(spec, f"quantize = {kind!r}: {type(denoiser).__name__} is loaded by "
                            f"{type(pipeline).__name__}'s own code, which bitsandbytes cannot "
                            "quantise; use \"int8\" or \"fp8\".")
    from torchao.quantization import quantize_

    quantize_(denoiser, torchao_type(kind))
    logger.info("denoiser quantised in place", extra={"fields": {
        "model": spec.name, "quantize": kind, "denoiser": type(denoiser).__name__}})
    return True


def gguf_denoiser(spec: ModelSpec, source: str, index: dict[str, Any], dtype: Any) -> Any:
    """The denoiser of ``spec.transformer`` (a GGUF file: a local path or a URL),
    loaded by the class the source's pipeline names for its transformer, with the
    configuration of the source's own transformer."""
    import diffusers
    from diffusers import GGUFQuantizationConfig
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    location = spec.transformer
    assert location is not None
    if not index:
        raise refused(spec, f"transformer = {location!r}: the source's model_index.json "
                            "could not be read, so the class its transformer needs is "
                            "unknown.")
    class_name = _component_class(index, "transformer")
    pipeline_name = index.get("_class_name", "the source's pipeline")
    if class_name is None:
        denoiser = denoiser_name(index)
        has = f"its denoiser is a {_component_class(index, denoiser)}" if denoiser \
            else "it has no denoiser"
        raise refused(spec, f"transformer = {location!r} replaces a pipeline's transformer, "
                            f"and {pipeline_name} has none ({has}).")
    if class_name not in SINGLE_FILE_LOADABLE_CLASSES or not hasattr(
            getattr(diffusers, class_name, None), "from_single_file"):
        raise refused(spec, f"transformer = {location!r}: diffusers cannot load a "
                            f"{class_name} from a single file; use quantize instead.")
    if "://" not in location and not Path(location).expanduser().is_file():
        raise refused(spec, f"transformer = {location!r}: no such file.")
    kwargs: dict[str, Any] = {"config": source, "subfolder": "transformer"}
    if spec.revision:
        kwargs["revision"] = spec.revision
    try:
        return getattr(diffusers, class_name).from_single_file(
            str(Path(location).expanduser()) if "://" not in location else location,
            quantization_config=GGUFQuantizationConfig(  # type: ignore[no-untyped-call]
                compute_dtype=dtype),
            torch_dtype=dtype, **kwargs)
    except Exception as exc:  # one line, whatever the loader raised
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise refused(spec, f"transformer = {location!r} could not be loaded as a "
                            f"{class_name} ({type(exc).__name__}: {detail}).") from exc

"""A pipeline from a local folder or the Hub, on the device and in the dtype chosen.

A folder whose model_index.json names a pipeline class registered in the
``diffuserve.pipelines`` entry-point group loads through that class; any other through
diffusers' auto pipeline, or the class the folder names. Every failure becomes one
paragraph that tells a person what is wrong and what to do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.diffusers.quantizing import (
    check_quantize,
    gguf_denoiser,
    quantization_config,
    quantize_denoiser_in_place,
)
from diffuserve.engine.errors import ModelLoadFailed
from diffuserve.engine.plugins import pipeline_class

logger = logging.getLogger(__name__)


def pick_device(requested: str) -> str:
    """CUDA, then Apple's MPS, then the CPU, unless the configuration names one."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str) -> Any:
    """Half precision on accelerators, float32 on the CPU (half is slow or unsupported)."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    return torch.float32 if device == "cpu" else torch.float16


def looks_local(source: str) -> bool:
    """``source`` is a folder on this machine rather than a Hub id."""
    return source.startswith((".", "/", "~")) or os.path.isdir(source)


def load_pipeline(spec: ModelSpec, device: str) -> Any:
    """The pipeline ``spec`` names, in the dtype for ``device`` (not yet moved there),
    with the quantised weights ``spec`` asks for (:mod:`.quantizing`);
    :class:`~diffuserve.engine.errors.ModelLoadFailed` when it cannot be loaded."""
    local = looks_local(spec.source)
    source = str(Path(spec.source).expanduser()) if local else spec.source
    # torchao's int4 kernels compute in bfloat16.
    dtype = pick_dtype("bfloat16" if spec.quantize == "int4" and spec.dtype == "auto"
                       else spec.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if spec.variant:
        kwargs["variant"] = spec.variant
    # Quantised weights: refused here, in one line, where they cannot run.
    check_quantize(spec, device)
    if spec.quantize is not None or spec.transformer is not None:
        index = _model_index(spec, source, local)
        if spec.transformer is not None:
            kwargs["transformer"] = gguf_denoiser(spec, source, index, dtype)
        if spec.quantize is not None:
            config = quantization_config(spec, index, dtype)
            if config is not None:
                kwargs["quantization_config"] = config
    try:
        own_class = project_pipeline(source) if local else None
        if own_class is not None:
            pipeline = own_class.from_pretrained(source, **kwargs)
        else:
            folder, stand_ins, after_load = processor_stand_ins(spec, source, local)
            pipeline = _load_diffusers(folder, {**kwargs, **stand_ins})
            if after_load:
                pipeline.register_modules(**after_load)
    except Exception as exc:  # every failure becomes one readable paragraph
        raise load_error(spec, exc) from exc
    quantize_denoiser_in_place(pipeline, spec)
    return pipeline


#: Processors that transformers 5 builds only with torchvision (Pixtral's is marked as
#: needing it; Qwen2-VL's video processor needs it), which these pipelines name: FLUX.2
#: dev's ``tokenizer`` and Qwen-Image-Edit(-Plus)'s ``processor``.
TORCHVISION_PROCESSORS = frozenset({"PixtralProcessor", "Qwen2VLProcessor"})


def processor_stand_ins(spec: ModelSpec, source: str,
                        local: bool) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Where torchvision is missing (CPU-only PyTorch builds), stand-ins for the
    processors that need it, made from the same files: where to load from (the Hub
    snapshot's folder, downloaded first, or ``source``), the components to pass, and the
    ones to set after loading. Nothing where torchvision is there or none is named.

    - ``PixtralProcessor`` (FLUX.2 dev's ``tokenizer``): its tokenizer, set after
      loading (diffusers checks a component passed against the class it cannot import);
      ``Flux2Pipeline`` only applies its chat template.
    - ``Qwen2VLProcessor`` (Qwen-Image-Edit's ``processor``): the processor without its
      video processor; the edit pipelines pass images, never videos.
    """
    from transformers.utils.import_utils import is_torchvision_available

    if is_torchvision_available():
        return source, {}, {}
    index = _model_index(spec, source, local)
    needing = {name: entry[1] for name, entry in index.items()
               if isinstance(entry, list) and len(entry) == 2
               and entry[1] in TORCHVISION_PROCESSORS}
    if not needing:
        return source, {}, {}
    from diffusers import DiffusionPipeline
    from transformers import AutoTokenizer

    folder = Path(source) if local else Path(DiffusionPipeline.download(
        source, **{key: value for key, value in
                   (("revision", spec.revision), ("variant", spec.variant)) if value}))
    stand_ins: dict[str, Any] = {}
    after_load: dict[str, Any] = {}
    for name, class_name in needing.items():
        if class_name == "PixtralProcessor":
            stand_ins[name] = None
            after_load[name] = AutoTokenizer.from_pretrained(folder / name)
        else:
            stand_ins[name] = qwen2_vl_processor_without_video(folder / name)
    logger.warning(
        "torchvision is not installed: processors that need it are loaded without it",
        extra={"fields": {"model": spec.name, "components": needing,
                          "fix": "install torchvision for the processors themselves"}})
    return str(folder), stand_ins, after_load


def _model_index(spec: ModelSpec, source: str, local: bool) -> dict[str, Any]:
    """The pipeline's model_index.json ({} where it cannot be read: loading says why)."""
    try:
        if local:
            path = Path(source) / "model_index.json"
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "model_index.json", revision=spec.revision))
        index = json.loads(path.read_text())
    except Exception:
        return {}
    return index if isinstance(index, dict) else {}


def qwen2_vl_processor_without_video(folder: Path) -> Any:
    """A ``Qwen2VLProcessor`` of the image processor and tokenizer in ``folder``, built
    around its check for the (torchvision-only) video processor."""
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLProcessor

    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = Qwen2VLProcessor.__new__(Qwen2VLProcessor)
    processor.image_processor = AutoImageProcessor.from_pretrained(folder)
    processor.tokenizer = tokenizer
    processor.video_processor = None
    processor.chat_template = tokenizer.chat_template
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    processor.video_token_id = tokenizer.convert_tokens_to_ids(processor.video_token)
    return processor


def project_pipeline(folder: str) -> Any:
    """The registered pipeline class a local folder's model_index.json names, if any."""
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        return None
    class_name = json.loads(index.read_text()).get("_class_name")
    return pipeline_class(class_name) if isinstance(class_name, str) else None


def _load_diffusers(source: str, kwargs: dict[str, Any]) -> Any:
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    try:
        return AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
            source, **kwargs
        )
    except ValueError as exc:
        # AutoPipeline knows only the families it maps; any other text-to-image
        # pipeline still loads through its own class named in model_index.json.
        if "AutoPipeline" not in str(exc) and "can't find a pipeline" not in str(exc):
            raise
        return DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            source, **kwargs
        )


def load_error(spec: ModelSpec, exc: BaseException) -> ModelLoadFailed:
    """One paragraph that tells a person what is wrong and what to do."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = f"model {spec.name!r} from {spec.source!r}"
    if looks_local(spec.source):
        folder = Path(spec.source).expanduser()
        if not folder.is_dir():
            advice = "that folder does not exist. Check the path in the model's `source`."
        elif not (folder / "model_index.json").is_file():
            advice = (
                "that folder is not a diffusers pipeline (it has no model_index.json). "
                "Point `source` at a folder written by `pipeline.save_pretrained()` or a "
                "downloaded Hub snapshot."
            )
        else:
            advice = (
                f"the pipeline in that folder could not be read ({type(exc).__name__}: {detail})."
            )
    elif os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        advice = (
            "HF_HUB_OFFLINE is set and the weights are not in the local Hugging Face cache. "
            f"Download them once with network access (`hf download {spec.source}`), point "
            "`source` at a local folder, or unset HF_HUB_OFFLINE."
        )
    else:
        advice = (
            "the weights could not be downloaded from the Hugging Face Hub "
            f"({type(exc).__name__}: {detail}). Check the model id and your network, log in "
            "with `hf auth login` for gated models, or point `source` at a local folder."
        )
    return ModelLoadFailed(f"Could not load {where}: {advice}")


def native_resolution(pipeline: Any, vae_scale: int) -> int:
    """The side, in pixels, the pipeline's denoiser was trained to draw (512 when it
    does not say)."""
    sample = getattr(pipeline, "default_sample_size", None)
    if sample is None:
        denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if isinstance(sample, (list, tuple)):
        sample = sample[0]
    if not isinstance(sample, int) or sample <= 0:
        return 512
    return int(sample) * vae_scale

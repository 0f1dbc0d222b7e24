"""The served models: one :class:`ModelSpec` each, from ``--model [NAME=]SOURCE`` or
the ``[[models]]`` tables of a TOML file (``--models-file``)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from diffuserve.config.adapters import (
    MAX_ADAPTERS_PER_REQUEST,
    AdapterSpec,
    LoraChoice,
    derive,
)
from diffuserve.config.options import (
    Offload,
    Quantize,
    option_conflicts,
    parse_cache,
)

Device = Literal["auto", "cuda", "mps", "cpu"]
DType = Literal["auto", "float16", "bfloat16", "float32"]
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune-no-cudagraphs",
                      "max-autotune"]


#: Steps and guidance of a model whose spec sets none and whose runtime reports none of
#: its own (SD 1.x, SDXL: the diffusers families without an adapter).
GENERIC_STEPS = 30
GENERIC_GUIDANCE_SCALE = 7.5


class RayOptions(BaseModel):
    """How a model is deployed under ``serve --ray``: its own Ray Serve deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: int = Field(default=1, ge=1, le=4096,
                          description="replicas (the first count when autoscaling)")
    min_replicas: int | None = Field(
        default=None, ge=0, le=4096, description="autoscaling floor (with max_replicas)")
    max_replicas: int | None = Field(
        default=None, ge=1, le=4096, description="autoscaling ceiling: setting it turns "
                                                 "autoscaling on")
    num_gpus: float | None = Field(
        default=None, ge=0, le=64,
        description="GPUs per replica (default: 1 when the model's device is cuda, else 0)")
    num_cpus: float = Field(default=1.0, ge=0, le=1024, description="CPUs per replica")
    max_ongoing_requests: int | None = Field(
        default=None, ge=1, le=100_000,
        description="requests a replica holds at once (default: twice max_batch_size, "
                    "so the next batch is ready when one ends)")

    @model_validator(mode="after")
    def _check_bounds(self) -> RayOptions:
        if self.min_replicas is not None and self.max_replicas is None:
            raise ValueError("min_replicas needs max_replicas (which turns autoscaling on)")
        if self.max_replicas is not None and not (
                (self.min_replicas or 0) <= self.replicas <= self.max_replicas):
            raise ValueError("replicas must lie between min_replicas and max_replicas")
        return self


class ModelSpec(BaseModel):
    """One served model: where its weights are and how OpenAI's knobs drive it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    source: str = Field(min_length=1, description="Hugging Face Hub id or local folder")
    backend: str = Field(
        default="diffusers", pattern=r"^[A-Za-z0-9_.-]+$",
        description="a runtime registered under the `diffuserve.backends` entry points")
    aliases: tuple[str, ...] = ()
    edit_model: str | None = Field(
        default=None, min_length=1,
        description="another served model (its name or alias) that draws this one's edits "
                    "and variations, e.g. a Qwen-Image-Edit beside a FLUX.1-dev; its own "
                    "edit_model is not followed")
    resolution: int | None = Field(
        default=None,
        ge=64,
        le=4096,
        description="Side of the square the model draws best; None reads it from the model",
    )
    steps: int | None = Field(
        default=None, ge=1, le=500,
        description="denoising steps at standard quality; default: the model's own (its "
                    f"family's, once loaded), else {GENERIC_STEPS}")
    hd_steps: int | None = Field(default=None, ge=1, le=500)
    min_steps: int | None = Field(
        default=None, ge=1, le=500,
        description="the fewest steps any quality or complexity gives (the model draws "
                    "noise below it); a request's own num_inference_steps is not raised")
    guidance_scale: float | None = Field(
        default=None, ge=0.0, le=50.0,
        description="guidance scale; default: the model's own (its family's, once "
                    f"loaded), else {GENERIC_GUIDANCE_SCALE:g}")
    vivid_guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    natural_guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    negative_prompt: str | None = None
    prompt_revision: Literal["styled", "verbatim"] = Field(
        default="styled",
        description="dall-e-3's rewrite: 'styled' adds phrases by style; 'verbatim' draws "
                    "the prompt as written (for models that know no such words)")
    max_batch_size: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        default=4,
        description="images per pipeline call; auto: measured at load (on a GPU from the "
                    "free memory and one image's peak use, elsewhere the batch after "
                    "which images stop getting cheaper)")
    compile: CompileMode = Field(
        default="off",
        description="torch.compile the denoiser and VAE decoder at load (inductor, weights "
                    "frozen unless the model has adapters; compiled kernels cached on "
                    "disk): default, reduce-overhead "
                    "(CUDA graphs), max-autotune-no-cudagraphs or max-autotune")
    compile_sizes: tuple[Annotated[str, Field(pattern=r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")],
                         ...] = Field(
        default=(), max_length=16,
        description="sizes (WxH) drawn at load when compiled, at every batch size up to "
                    "max_batch_size, so that no request waits for a compilation; default: "
                    "the model's native square")
    runtime: Literal["torch", "onnx"] = Field(
        default="torch",
        description="onnx: on a CPU, the denoiser runs on ONNX Runtime (exported at the "
                    "first load and cached; pipelines that offer it: the built-in model); "
                    "elsewhere, and with torch, PyTorch")
    workers: int = Field(
        default=1, ge=1, le=64,
        description="on a CPU, pipeline calls of this model that run at once under load, "
                    "each on its share of the cores (a call alone uses them all): small "
                    "models fill the cores better side by side than one call can")
    device: Device = "auto"
    dtype: DType = "auto"
    # Residency (engine/local/residency.py).
    load_at_start: bool | None = Field(
        default=None,
        description="load when the server starts (counted by /ready); default: yes while "
                    "within --max-loaded-models, in the order configured; false: on the "
                    "first request or an admin's load")
    idle_unload_seconds: float | None = Field(
        default=None, gt=0, le=31_536_000,
        description="unload after this long without a request (loaded again by the next "
                    "one); default: never")
    revision: str | None = None
    variant: str | None = None
    ray: RayOptions = RayOptions()
    # Memory and speed (config/options.py).
    quantize: Quantize | None = Field(
        default=None,
        description="weights stored quantised, applied to the denoiser and to LLM text "
                    "encoders (T5, Qwen2.5-VL, Mistral…; not CLIP): int8 and fp8 (torchao, "
                    "weight-only; the CPU too), int4 (torchao, CUDA), nf4 (bitsandbytes, "
                    "CUDA); needs the quantize extra")
    transformer: str | None = Field(
        default=None, min_length=1,
        description="a GGUF file (a local path or a Hugging Face URL) as the denoiser, "
                    "quantised as the file is; the rest of the pipeline from source")
    offload: Offload | None = Field(
        default=None,
        description="on CUDA, weights kept on the CPU between uses: model (each component "
                    "moved whole to the GPU when it runs), sequential (layer by layer: the "
                    "least memory, the slowest), group (layer by layer, each moved ahead "
                    "of its use on a side CUDA stream)")
    cache: str | None = Field(
        default=None, min_length=1,
        description="step caching of a transformer model (diffusers' cache hooks), some "
                    "fidelity for speed: first-block:T (the first-block cache at threshold "
                    "T, above 0 and at most 1: 0.05 to 0.2 are usual), taylorseer, faster")
    # LoRA adapters (config/adapters.py).
    adapters_dir: str | None = Field(
        default=None, min_length=1,
        description="a folder whose *.safetensors files are this model's adapters, named "
                    "by their stems; a file added is usable without a restart")
    adapters: tuple[AdapterSpec, ...] = Field(
        default=(), max_length=1024, description="adapters declared by name ([[models.adapters]])")
    max_loaded_adapters: int = Field(
        default=8, ge=MAX_ADAPTERS_PER_REQUEST, le=256,
        description="adapters kept loaded in the model's weights (least recently used "
                    "unloaded first)")
    max_adapter_rank: int = Field(
        default=64, ge=1, le=1024,
        description="with compile, the highest LoRA rank an adapter drawn alone may have "
                    "to be swapped in without recompiling (diffusers' hotswap; lower ranks "
                    "are padded to it, and the slot computes at it on every call)")
    base: str | None = Field(
        default=None, min_length=1,
        description="set on a derived model: the served model whose loaded weights it "
                    "draws with (its own adapters and knobs on top)")
    lora: tuple[LoraChoice, ...] = Field(
        default=(), max_length=MAX_ADAPTERS_PER_REQUEST,
        description="adapters this model always draws with (a derived model's style); a "
                    "request's own are added, and its scale for one of these wins")

    @property
    def engine_name(self) -> str:
        """The configured model whose weights draw this one's images: itself, or for a
        derived model its base."""
        return self.base or self.name

    @model_validator(mode="after")
    def _unique_adapters(self) -> ModelSpec:
        names = [adapter.name for adapter in self.adapters]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"adapters named more than once: {repeated}")
        chosen = [choice.name for choice in self.lora]
        if len(set(chosen)) != len(chosen):
            raise ValueError("lora names an adapter more than once")
        return self

    @field_validator("cache")
    @classmethod
    def _known_cache(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cache(value)
        return value

    @field_validator("transformer")
    @classmethod
    def _gguf_file(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().endswith(".gguf"):
            raise ValueError(f"transformer = {value!r}: a GGUF file (*.gguf) is expected; "
                             "a denoiser in another format goes in the source's folder")
        return value

    @model_validator(mode="after")
    def _options_that_go_together(self) -> ModelSpec:
        conflict = option_conflicts(
            quantize=self.quantize, transformer=self.transformer, offload=self.offload,
            cache=self.cache, device=self.device, dtype=self.dtype, compile=self.compile,
            runtime=self.runtime, workers=self.workers)
        if conflict is not None:
            raise ValueError(conflict)
        return self

    @model_validator(mode="after")
    def _one_way_to_speed_up(self) -> ModelSpec:
        if self.runtime == "onnx" and self.compile != "off":
            raise ValueError("runtime = \"onnx\" and compile are alternatives: choose one")
        if self.workers > 1 and self.compile != "off":
            raise ValueError("workers above 1 run on a CPU without compile: choose one")
        if self.workers > 1 and self.device not in ("auto", "cpu"):
            raise ValueError("workers above 1 are for models on the CPU (device = \"cpu\")")
        return self

    @property
    def batch_images(self) -> int:
        """``max_batch_size`` as a number: the default 4 until ``auto`` is measured."""
        return 4 if self.max_batch_size == "auto" else self.max_batch_size


def parse_model_flag(value: str) -> ModelSpec:
    """``--model [NAME=]SOURCE``: without a name, the source's last path part names it."""
    name, sep, source = value.partition("=")
    if not sep:
        source = value
        name = Path(value.rstrip("/")).name or value
    return ModelSpec(name=name.strip(), source=source.strip())


def load_models_file(path: Path) -> list[ModelSpec]:
    """Read ``[[models]]`` tables from a TOML file."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    unknown = set(data) - {"models"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; expected [[models]]")
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: `models` must be an array of tables ([[models]])")
    folder = path.parent
    specs: list[ModelSpec] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: models[{index}] must be a table")
        if entry.get("base") is not None:
            continue
        spec = ModelSpec.model_validate(entry)
        local = (folder / spec.source).expanduser()
        if spec.source.startswith((".", "~", "/")) and local.exists():
            spec = spec.model_copy(update={"source": str(local.resolve())})
        if spec.adapters_dir is not None:
            spec = spec.model_copy(update={"adapters_dir": str(
                (folder / spec.adapters_dir).expanduser().resolve())})
        if spec.transformer is not None and "://" not in spec.transformer:
            spec = spec.model_copy(update={"transformer": str(
                (folder / spec.transformer).expanduser().resolve())})
        if spec.adapters:
            spec = spec.model_copy(update={"adapters": tuple(
                _adapter_in(folder, adapter) for adapter in spec.adapters)})
        specs.append(spec)
    # Derived models, once every model they may derive from is read.
    served = {spec.name: spec for spec in specs}
    for entry in entries:
        if entry.get("base") is None:
            continue
        base = served.get(str(entry["base"]))
        if base is None and any(other.get("name") == entry["base"] for other in entries):
            raise ValueError(f"{path}: model {entry.get('name')!r} derives from "
                             f"{entry['base']!r}, which is itself derived; name the model "
                             "it derives from")
        if base is None:
            raise ValueError(f"{path}: model {entry.get('name')!r} derives from "
                             f"{entry['base']!r}, which is not a model of this file")
        specs.append(ModelSpec.model_validate(derive(base.model_dump(), entry)))
    return specs


def _adapter_in(folder: Path, adapter: AdapterSpec) -> AdapterSpec:
    """A declared adapter whose source is a path relative to the models file's folder,
    resolved (a Hub id stays as it is; a name ending in .safetensors is a file)."""
    local = (folder / adapter.source).expanduser()
    if adapter.source.startswith((".", "~", "/")) or adapter.source.endswith(".safetensors") \
            or local.exists():
        return adapter.model_copy(update={"source": str(local.resolve())})
    return adapter

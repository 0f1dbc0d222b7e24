"""Settings: built once at start-up, frozen, CLI over environment over defaults.

Environment variables use the prefix ``DIFFUSERVE_`` (``DIFFUSERVE_PORT=9000``). List
settings accept a comma-separated string (``DIFFUSERVE_API_KEYS=sk-a,sk-b``). Models come
from a TOML file (``--models-file`` / ``DIFFUSERVE_MODELS_FILE``) and/or repeated
``--model`` flags.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Names OpenAI clients insist on; they resolve to the default model unless a model
#: claims them itself.
OPENAI_MODEL_NAMES = ("dall-e-2", "dall-e-3", "gpt-image-1")

Device = Literal["auto", "cuda", "mps", "cpu"]
DType = Literal["auto", "float16", "bfloat16", "float32"]


class ModelSpec(BaseModel):
    """One served model: where its weights are and how OpenAI's knobs drive it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    source: str = Field(min_length=1, description="Hugging Face Hub id or local folder")
    backend: Literal["diffusers"] = "diffusers"
    aliases: tuple[str, ...] = ()
    resolution: int | None = Field(
        default=None,
        ge=64,
        le=4096,
        description="Side of the square the model draws best; None reads it from the model",
    )
    steps: int = Field(default=30, ge=1, le=500)
    hd_steps: int | None = Field(default=None, ge=1, le=500)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=50.0)
    vivid_guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    natural_guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    negative_prompt: str | None = None
    prompt_revision: Literal["styled", "verbatim"] = Field(
        default="styled",
        description="dall-e-3's rewrite: 'styled' adds phrases by style; 'verbatim' draws "
                    "the prompt as written (for models that know no such words)")
    max_batch_size: int = Field(default=4, ge=1, le=64)
    device: Device = "auto"
    dtype: DType = "auto"
    revision: str | None = None
    variant: str | None = None

    @property
    def effective_hd_steps(self) -> int:
        return self.hd_steps if self.hd_steps is not None else max(self.steps + 1,
                                                                   round(self.steps * 1.6))

    def guidance_for_style(self, style: str | None) -> float:
        if style == "vivid" and self.vivid_guidance_scale is not None:
            return self.vivid_guidance_scale
        if style == "natural" and self.natural_guidance_scale is not None:
            return self.natural_guidance_scale
        return self.guidance_scale


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
    base = path.parent
    specs = []
    for entry in entries:
        spec = ModelSpec.model_validate(entry)
        local = (base / spec.source).expanduser()
        if spec.source.startswith((".", "~", "/")) and local.exists():
            spec = spec.model_copy(update={"source": str(local.resolve())})
        specs.append(spec)
    return specs


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def default_storage_dir() -> Path:
    return Path(platformdirs.user_cache_dir("diffuserve")) / "images"


class Settings(BaseSettings):
    """Everything the server reads at start; never re-read afterwards."""

    model_config = SettingsConfigDict(env_prefix="DIFFUSERVE_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    models: tuple[ModelSpec, ...] = ()
    models_file: Path | None = None
    aliases: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="ALIAS=MODEL pairs"
    )
    default_model: str | None = None
    auto_aliases: bool = True

    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    api_keys_file: Path | None = None
    insecure_no_auth: bool = False

    storage_dir: Path = Field(default_factory=default_storage_dir)
    public_url: str | None = None
    url_ttl_seconds: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    signing_secret: SecretStr | None = None
    sweep_interval_seconds: float = Field(default=60.0, gt=0)
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()

    max_body_bytes: int = Field(default=1 << 20, ge=1024)

    max_queue: int = Field(default=64, ge=1, le=100_000,
                           description="requests waiting per model before 429")
    batching: bool = True
    request_timeout_seconds: float = Field(default=540.0, gt=0, le=86_400)
    shutdown_timeout_seconds: float = Field(default=30.0, ge=0, le=3600)
    rate_limit_rpm: int = Field(default=0, ge=0, description="requests/min per key; 0: none")
    rate_limit_ipm: int = Field(default=0, ge=0, description="images/min per key; 0: none")
    metrics_max_users: int = Field(default=100, ge=0, le=100_000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    _split = field_validator("api_keys", "trusted_proxies", "aliases", mode="before")(_split_csv)

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("aliases")
    @classmethod
    def _check_aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            alias, sep, target = item.partition("=")
            if not sep or not alias.strip() or not target.strip():
                raise ValueError(f"alias {item!r} must look like ALIAS=MODEL")
        return value

    @model_validator(mode="after")
    def _load_files(self) -> Settings:
        if self.models_file is not None:
            file_models = tuple(load_models_file(self.models_file))
            object.__setattr__(self, "models", file_models + self.models)
        names: set[str] = set()
        for spec in self.models:
            for public in (spec.name, *spec.aliases):
                if public in names:
                    raise ValueError(f"model name or alias {public!r} is configured twice")
                names.add(public)
        return self

    def alias_pairs(self) -> list[tuple[str, str]]:
        return [
            (alias.strip(), target.strip())
            for alias, _, target in (item.partition("=") for item in self.aliases)
        ]

    def is_loopback(self) -> bool:
        if self.host in ("localhost", "ip6-localhost"):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def safe_summary(self) -> dict[str, Any]:
        """What may be logged: no key, no secret."""
        return {
            "host": self.host,
            "port": self.port,
            "models": [spec.name for spec in self.models],
            "api_keys": len(self.api_keys),
            "api_keys_file": str(self.api_keys_file) if self.api_keys_file else None,
            "storage_dir": str(self.storage_dir),
            "public_url": self.public_url,
            "url_ttl_seconds": self.url_ttl_seconds,
            "signing_secret": "set" if self.signing_secret else "persisted in storage_dir",
            "trusted_proxies": list(self.trusted_proxies),
            "max_queue": self.max_queue,
            "batching": self.batching,
            "request_timeout_seconds": self.request_timeout_seconds,
            "rate_limit_rpm": self.rate_limit_rpm,
            "rate_limit_ipm": self.rate_limit_ipm,
        }

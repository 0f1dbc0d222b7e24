"""Settings: built once at start-up, frozen, CLI over environment over defaults.

Environment variables use the prefix ``DIFFUSERVE_`` (``DIFFUSERVE_PORT=9000``). List
settings accept a comma-separated string (``DIFFUSERVE_API_KEYS=sk-a,sk-b``). Models come
from a TOML file (``--models-file`` / ``DIFFUSERVE_MODELS_FILE``) and/or repeated
``--model`` flags. The command line is generated from these classes
(:func:`~diffuserve.config.flags.settings_cli`): a field ``url_ttl_seconds`` is the flag
``--url-ttl-seconds``.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, CliSuppress, NoDecode, SettingsConfigDict

from diffuserve.config.limits import check_rate_limit_storage
from diffuserve.config.models import ModelSpec, load_models_file, parse_model_flag
from diffuserve.config.urls import INSTALL_HINT, browser_origin, mask_url, parse_storage_url

#: Deflate level of PNG output unless configured: on the request path, encode time
#: counts more than the last per cent of size.
PNG_COMPRESS_LEVEL = 1


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def default_storage_dir() -> Path:
    return Path(platformdirs.user_cache_dir("diffuserve")) / "images"


_SETTINGS_CONFIG = SettingsConfigDict(
    env_prefix="DIFFUSERVE_", frozen=True, extra="forbid",
    cli_kebab_case=True, cli_implicit_flags=True,
)


class ModelSelection(BaseSettings):
    """Which models are served and under which names (``serve``, ``generate``, ``models``)."""

    model_config = _SETTINGS_CONFIG

    models: CliSuppress[tuple[ModelSpec, ...]] = Field(
        default=(), description="model tables as JSON (a TOML file reads better)")
    models_file: Path | None = Field(default=None, description="TOML file of [[models]]")
    aliases: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="ALIAS=MODEL: another public name for a model (repeatable)")
    default_model: str | None = Field(
        default=None, description="what unclaimed OpenAI names point at (default: the first)")
    auto_aliases: bool = Field(
        default=True, description="point dall-e-2, dall-e-3 and gpt-image-1 at the default "
                                  "model unless a model claims them")

    _split_aliases = field_validator("aliases", mode="before")(_split_csv)

    @field_validator("aliases")
    @classmethod
    def _check_aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            alias, sep, target = item.partition("=")
            if not sep or not alias.strip() or not target.strip():
                raise ValueError(f"alias {item!r} must look like ALIAS=MODEL")
        return value

    @model_validator(mode="after")
    def _load_files(self) -> ModelSelection:
        file_models = load_models_file(self.models_file) if self.models_file else []
        object.__setattr__(self, "models", (*file_models, *self.models, *self._flag_models()))
        names: set[str] = set()
        for spec in self.models:
            for public in (spec.name, *spec.aliases):
                if public in names:
                    raise ValueError(f"model name or alias {public!r} is configured twice")
                names.add(public)
        loaded = {spec.name for spec in self.engine_models}
        for spec in self.models:
            if spec.base is not None and spec.base not in loaded:
                raise ValueError(f"model {spec.name!r} derives from {spec.base!r}, which is "
                                 "not a served model with weights of its own")
        return self

    @property
    def engine_models(self) -> tuple[ModelSpec, ...]:
        """The models whose weights the engine loads: every model but the derived ones
        (which draw with their base's)."""
        return tuple(spec for spec in self.models if spec.base is None)

    def _flag_models(self) -> tuple[ModelSpec, ...]:
        return ()

    def alias_pairs(self) -> list[tuple[str, str]]:
        return [
            (alias.strip(), target.strip())
            for alias, _, target in (item.partition("=") for item in self.aliases)
        ]


class Settings(ModelSelection):
    """Everything the server reads at start; never re-read afterwards."""

    model: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="serve a diffusers pipeline: [NAME=]SOURCE, a Hugging Face "
                                "Hub id or a local folder (repeatable)")
    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8000, ge=0, le=65535, description="port")

    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(), description="accept this bearer key (repeatable); as a flag it is "
                                "visible to other local users in `ps`: prefer "
                                "DIFFUSERVE_API_KEYS or --api-keys-file")
    api_keys_file: Path | None = Field(
        default=None, description="one key (or sha256:<hex> of it) per line, optional name "
                                  "and rpm=/ipm= limits")
    insecure_no_auth: bool = Field(
        default=False, description="allow a non-loopback bind without API keys")

    storage_dir: Path = Field(default_factory=default_storage_dir,
                              description="where url images and the signing key live")
    public_url: str | None = Field(
        default=None, description="scheme://host[:port][/prefix] of image links")
    url_ttl_seconds: int = Field(default=3600, ge=10, le=7 * 24 * 3600,
                                 description="image link lifetime; files are deleted after it")
    # A secret on the command line would show in `ps`: environment only.
    signing_secret: CliSuppress[SecretStr | None] = Field(
        default=None, description="HMAC key of image links (default: generated once and "
                                  "kept in the storage dir)")
    sweep_interval_seconds: float = Field(default=60.0, gt=0,
                                          description="how often expired images are deleted")
    storage_url: str | None = Field(
        default=None, description="s3://BUCKET[/PREFIX] to keep url images in an "
                                  "S3-compatible object store (endpoint, region and "
                                  "credentials from the AWS_* variables); default: the "
                                  "local storage dir")
    storage_sweep: bool = Field(
        default=True, description="with --storage-url, delete expired images from the "
                                  "bucket every sweep interval; off: a lifecycle rule of "
                                  "the bucket expires them")
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="IP/CIDR whose X-Forwarded-Proto/-Host/-Prefix to believe "
                                "(repeatable)")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="let browser apps of this origin (scheme://host[:port], "
                                "e.g. http://localhost:3000) call the API (repeatable); "
                                "none by default")

    provenance: bool = Field(
        default=True, description="mark every image served: a signed C2PA manifest (made "
                                  "by which model, when, from which inputs) and an "
                                  "invisible watermark naming this server")
    provenance_watermark: bool = Field(
        default=True, description="with --provenance, the invisible watermark too (off: "
                                  "the manifest only, the pixels as drawn)")
    provenance_cert_file: Path | None = Field(
        default=None, description="PEM certificate chain (the signer's first) that signs "
                                  "the C2PA manifests; default: a self-signed chain made "
                                  "once and kept in the storage dir (valid, not trusted)")
    provenance_key_file: Path | None = Field(
        default=None, description="PEM private key of --provenance-cert-file's signer")
    # The chain and key as PEM text: environment only, as the link-signing secret.
    provenance_cert: CliSuppress[str | None] = Field(
        default=None, description="PEM certificate chain of the C2PA signer, as text "
                                  "(instead of --provenance-cert-file)")
    provenance_key: CliSuppress[SecretStr | None] = Field(
        default=None, description="PEM private key of the C2PA signer, as text (instead "
                                  "of --provenance-key-file)")
    provenance_trust_anchors: Path | None = Field(
        default=None, description="PEM root certificates: a provenance check calls a "
                                  "manifest signed under one of them trusted (default: "
                                  "none, so valid at most)")

    api_docs: bool = Field(
        default=True, description="serve /openapi.json and /docs (behind the API keys)")
    playground: bool = Field(
        default=True, description="serve the web playground at / (its page asks for the "
                                  "key and calls the API like any client)")
    max_body_bytes: int = Field(default=1 << 20, ge=1024,
                                description="request body limit (413 beyond)")
    allow_remote_image_urls: bool = Field(
        default=False, description="fetch the http(s) image_urls of JSON edits (public "
                                   "addresses only, no redirects, bounded); off: data URLs "
                                   "only")
    max_upload_bytes: int = Field(
        default=64 << 20, ge=1 << 20, le=1 << 30,
        description="body limit of the edits and variations routes, which carry images "
                    "(413 beyond)")
    max_header_bytes: int = Field(
        default=16 * 1024, ge=256, le=1 << 20,
        description="request line + headers limit (431 beyond, nothing more is read)")
    max_headers: int = Field(default=100, ge=1, le=10_000,
                             description="header fields per request (431 beyond)")
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300,
        description="time to receive a request's headers, however slowly bytes trickle "
                    "in (408 after it); a silent connection is closed")
    keep_alive_timeout_seconds: int = Field(
        default=5, ge=1, le=300, description="idle keep-alive connections close after it")
    max_connections: int = Field(
        default=1024, ge=1, le=65_536,
        description="open connections per process (503 + Retry-After beyond)")

    ray: bool = Field(
        default=False, description="run as a Ray Serve application on the cluster named by "
                                   "RAY_ADDRESS (a local Ray instance when unset): an HTTP "
                                   "ingress and one deployment per model")
    replicas: int | None = Field(
        default=None, ge=1, le=4096,
        description="under --ray, replicas of every model (default: each model's "
                    "[models.ray] table, else 1)")
    ingress_replicas: int = Field(
        default=1, ge=1, le=4096,
        description="under --ray, HTTP ingress replicas (more than one needs "
                    "--storage-url or a shared storage dir with DIFFUSERVE_SIGNING_SECRET, "
                    "and --rate-limit-storage redis://…)")

    png_compress_level: int = Field(
        default=PNG_COMPRESS_LEVEL, ge=0, le=9,
        description="deflate level of PNG output: 1-3 by ISA-L (fast), 0 stored, 4-9 by "
                    "zlib (on flat artwork, 6 takes 6x as long as 1 for files 25 % smaller)")
    max_loaded_models: int = Field(
        default=0, ge=0, le=1024,
        description="models kept loaded at once; a request for another waits while the "
                    "least recently used idle one is unloaded and it loads; 0: no limit")
    device_memory_budget: float | None = Field(
        default=None, gt=0, le=1_000_000,
        description="GB the loaded models' weights may take together (on a GPU, its "
                    "memory); the least recently used idle models are unloaded to stay "
                    "within it; default: no budget")
    max_queue: int = Field(default=64, ge=1, le=100_000,
                           description="requests waiting per model before 429")
    batching: bool = Field(default=True,
                           description="put compatible requests into one pipeline call")
    request_timeout_seconds: float = Field(
        default=540.0, gt=0, le=86_400,
        description="deadline of a generation request, queue included")
    shutdown_timeout_seconds: float = Field(
        default=30.0, ge=0, le=3600,
        description="on SIGTERM, how long running work may finish before it is refused "
                    "with 503")
    content_policy: str | None = Field(
        default=None, description="a content policy registered under the "
                                  "diffuserve.content_policy entry points, checked before "
                                  "admission (moderation auto or low is passed to it)")
    rate_limit_rpm: int = Field(default=0, ge=0, description="requests/min per key; 0: none")
    rate_limit_ipm: int = Field(default=0, ge=0, description="images/min per key; 0: none")
    rate_limit_storage: str = Field(
        default="memory://", repr=False,  # a Redis URL may hold a password
        description="where the per-key limits are counted: memory:// (this process) or "
                    "redis://HOST:PORT/DB (shared by every replica and kept across "
                    "restarts); also rediss://, redis+sentinel://")
    metrics_max_users: int = Field(default=100, ge=0, le=100_000,
                                   description="distinct `user` labels in the metrics")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="JSON logs on stderr from this level")

    _split = field_validator("model", "api_keys", "trusted_proxies", "cors_origins",
                             mode="before")(_split_csv)

    def _flag_models(self) -> tuple[ModelSpec, ...]:
        return tuple(parse_model_flag(item) for item in self.model)

    @model_validator(mode="after")
    def _room_for_the_start(self) -> Settings:
        chosen = [spec.name for spec in self.engine_models if spec.load_at_start]
        if self.max_loaded_models and len(chosen) > self.max_loaded_models:
            raise ValueError(
                f"{len(chosen)} models set load_at_start = true ({', '.join(chosen)}) but "
                f"--max-loaded-models is {self.max_loaded_models}: raise it, or set "
                "load_at_start = false on some")
        return self

    @property
    def start_models(self) -> tuple[str, ...]:
        """The models loaded when the server starts (and counted by /ready): those that
        say so, then the others in the order configured while within
        ``max_loaded_models``; never one whose ``load_at_start`` is false."""
        room = self.max_loaded_models or len(self.engine_models)
        chosen = [spec.name for spec in self.engine_models if spec.load_at_start]
        for spec in self.engine_models:
            if spec.load_at_start is None and len(chosen) < room:
                chosen.append(spec.name)
        return tuple(spec.name for spec in self.engine_models if spec.name in chosen)

    @model_validator(mode="after")
    def _one_signing_identity(self) -> Settings:
        files = (self.provenance_cert_file, self.provenance_key_file)
        texts = (self.provenance_cert, self.provenance_key)
        for pair, names in ((files, "--provenance-cert-file and --provenance-key-file"),
                            (texts, "DIFFUSERVE_PROVENANCE_CERT and DIFFUSERVE_PROVENANCE_KEY")):
            if (pair[0] is None) != (pair[1] is None):
                raise ValueError(f"{names} go together: a certificate chain and its key")
        if files[0] is not None and texts[0] is not None:
            raise ValueError("the C2PA signing identity is given twice: as files and as "
                             "DIFFUSERVE_PROVENANCE_CERT/KEY; keep one")
        return self

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        location = str(parse_storage_url(value))  # normalised: no slash around the prefix
        if importlib.util.find_spec("boto3") is None:
            raise ValueError(INSTALL_HINT)
        return location

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value.rstrip("/")

    _check_rate_limit_storage = field_validator("rate_limit_storage")(
        check_rate_limit_storage)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(browser_origin(item) for item in value))

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
            "signing_secret": "not used: the bucket presigns links" if self.storage_url
                              else "set" if self.signing_secret else "persisted in storage_dir",
            "storage_url": self.storage_url,
            "storage_sweep": self.storage_sweep,
            "trusted_proxies": list(self.trusted_proxies),
            "cors_origins": list(self.cors_origins),
            "max_loaded_models": self.max_loaded_models,
            "device_memory_budget": self.device_memory_budget,
            "max_queue": self.max_queue,
            "batching": self.batching,
            "request_timeout_seconds": self.request_timeout_seconds,
            "max_header_bytes": self.max_header_bytes,
            "header_timeout_seconds": self.header_timeout_seconds,
            "max_connections": self.max_connections,
            "rate_limit_rpm": self.rate_limit_rpm,
            "rate_limit_ipm": self.rate_limit_ipm,
            "rate_limit_storage": mask_url(self.rate_limit_storage),
            "provenance": self.provenance,
            "provenance_watermark": self.provenance_watermark,
            "provenance_identity": "files" if self.provenance_cert_file
                                   else "environment" if self.provenance_cert
                                   else "kept in storage_dir",
        }


"""Settings: built once at start-up, frozen, CLI over environment over defaults.

Environment variables use the prefix ``DIFFUSERVE_`` (``DIFFUSERVE_PORT=9000``). List
settings accept a comma-separated string (``DIFFUSERVE_API_KEYS=sk-a,sk-b``). Models come
from a TOML file (``--models-file`` / ``DIFFUSERVE_MODELS_FILE``) and/or repeated
``--model`` flags. The command line is generated from these classes
(:func:`settings_cli`): a field ``url_ttl_seconds`` is the flag ``--url-ttl-seconds``.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import tomllib
import types
import typing
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    CliSettingsSource,
    CliSuppress,
    NoDecode,
    SettingsConfigDict,
)

from diffuserve.service.output import PNG_COMPRESS_LEVEL
from diffuserve.storage.s3 import INSTALL_HINT, parse_storage_url

Device = Literal["auto", "cuda", "mps", "cpu"]
DType = Literal["auto", "float16", "bfloat16", "float32"]
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune-no-cudagraphs",
                      "max-autotune"]


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
    steps: int = Field(default=30, ge=1, le=500)
    hd_steps: int | None = Field(default=None, ge=1, le=500)
    min_steps: int | None = Field(
        default=None, ge=1, le=500,
        description="the fewest steps any quality or complexity gives (the model draws "
                    "noise below it); a request's own num_inference_steps is not raised")
    guidance_scale: float = Field(default=7.5, ge=0.0, le=50.0)
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
                    "frozen; compiled kernels cached on disk): default, reduce-overhead "
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
    revision: str | None = None
    variant: str | None = None
    ray: RayOptions = RayOptions()

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
    base = path.parent
    specs = []
    for entry in entries:
        spec = ModelSpec.model_validate(entry)
        local = (base / spec.source).expanduser()
        if spec.source.startswith((".", "~", "/")) and local.exists():
            spec = spec.model_copy(update={"source": str(local.resolve())})
        specs.append(spec)
    return specs


def browser_origin(text: str) -> str:
    """``text`` as a browser writes it in ``Origin`` (``scheme://host[:port]``, lower
    case, no trailing slash), or a ValueError that says what an origin is."""
    parts = urllib.parse.urlsplit(text.strip())
    if (not parts.scheme or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or "@" in parts.netloc or "*" in text):
        raise ValueError(f"{text!r} is not an origin: write scheme://host[:port] as the "
                         "browser shows it (http://localhost:3000), with no path and no *")
    return f"{parts.scheme}://{parts.netloc}".lower()


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: Where per-key rate limits can be counted (``--rate-limit-storage``).
RATE_LIMIT_SCHEMES = ("memory", "redis", "rediss", "redis+sentinel")
_RATE_LIMIT_STORAGE_FORMS = ("memory:// (this process) or redis://HOST:PORT/DB (shared by "
                             "every replica; also rediss:// and "
                             "redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE)")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/@,]+):\d{1,5}")


def check_rate_limit_storage(url: str) -> str:
    """``url`` if it names a storage the limits can use; else a ValueError that never
    repeats the URL, which may hold a password."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in RATE_LIMIT_SCHEMES:
        what = (f"a {scheme}:// URL" if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme)
                else "a value that is not such a URL")
        raise ValueError(f"rate_limit_storage must be {_RATE_LIMIT_STORAGE_FORMS}, not {what}")
    if scheme == "memory":
        if rest:
            raise ValueError("rate_limit_storage memory:// takes nothing after the scheme")
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise ValueError(f"rate_limit_storage is not a valid {scheme}:// URL") from None
    for location in parts.netloc.rpartition("@")[2].split(","):
        if not _HOST_PORT.fullmatch(location):
            raise ValueError(f"rate_limit_storage {scheme}:// needs HOST:PORT (a numeric "
                             "port), comma-separated for several sentinels")
    if scheme == "redis+sentinel":
        if not parts.path.strip("/"):
            raise ValueError("rate_limit_storage redis+sentinel:// needs the service name "
                             "as its path: redis+sentinel://HOST:PORT/SERVICE")
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"rate_limit_storage {scheme}:// takes a database number as its "
                         "path: redis://HOST:PORT/0")
    return url


def url_secrets(url: str) -> list[str]:
    """The password of ``url`` and its password-like query values, as written and
    decoded: what must never reach a log line."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return [url]
    userinfo, at, _ = parts.netloc.rpartition("@")
    found = [userinfo.partition(":")[2] or userinfo] if at else []
    found += [value for key, value in urllib.parse.parse_qsl(parts.query)
              if "pass" in key.lower()]
    found += [urllib.parse.unquote(secret) for secret in found]
    return [secret for secret in found if secret]


def mask_url(url: str) -> str:
    """``redis://user:secret@host/0`` → ``redis://user:***@host/0``: what may be logged."""
    if not url_secrets(url):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "***"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    query = "&".join(f"{key}={'***' if 'pass' in key.lower() else value}"
                     for key, value in urllib.parse.parse_qsl(parts.query))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


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
        return self

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
            "max_queue": self.max_queue,
            "batching": self.batching,
            "request_timeout_seconds": self.request_timeout_seconds,
            "max_header_bytes": self.max_header_bytes,
            "header_timeout_seconds": self.header_timeout_seconds,
            "max_connections": self.max_connections,
            "rate_limit_rpm": self.rate_limit_rpm,
            "rate_limit_ipm": self.rate_limit_ipm,
            "rate_limit_storage": mask_url(self.rate_limit_storage),
        }


#: Shorter spellings of some flags, kept from earlier releases.
CLI_SHORTCUTS = {
    "api_keys": "api-key",
    "aliases": "alias",
    "trusted_proxies": "trusted-proxy",
    "url_ttl_seconds": "url-ttl",
    "request_timeout_seconds": "request-timeout",
    "shutdown_timeout_seconds": "shutdown-timeout",
    "header_timeout_seconds": "header-timeout",
    "keep_alive_timeout_seconds": "keep-alive-timeout",
}



#: Settings read from the environment or files only.
NOT_FLAGS = frozenset({"models", "signing_secret"})

#: What a flag's value looks like in ``--help``, where its type would not say it
#: (pydantic-settings prints the type: ``tuple[str,...]``, ``{Path,null}``). Other fields
#: are named by :func:`_metavar_of_type`; a Literal keeps its ``{choice,...}``.
CLI_METAVARS = {
    "aliases": "ALIAS=MODEL",
    "default_model": "NAME",
    "model": "[NAME=]SOURCE",
    "host": "ADDRESS",
    "port": "PORT",
    "api_keys": "KEY",
    "storage_dir": "DIR",
    "public_url": "URL",
    "storage_url": "s3://BUCKET[/PREFIX]",
    "trusted_proxies": "IP/CIDR",
    "cors_origins": "ORIGIN",
    "png_compress_level": "0-9",
    "content_policy": "NAME",
    "rate_limit_storage": "URL",
}


def _metavar_of_type(name: str, annotation: Any) -> str | None:
    """A placeholder in words for a field's value from its name and type; None for a
    Literal (argparse shows its choices) or a bool (a flag takes no value)."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return None
    if origin in (tuple, typing.Union, types.UnionType) and args:
        return _metavar_of_type(name, args[0])  # a list's item; an optional's value
    if annotation is bool:
        return None
    if annotation is Path:
        return "PATH"
    for suffix in ("seconds", "bytes"):
        if name.endswith(f"_{suffix}"):
            return suffix.upper()
    return {int: "N", float: "NUMBER"}.get(annotation, "TEXT")


def _default_in_words(field: FieldInfo) -> str | None:
    """A field's default as a user would type it; None where nothing is set by default."""
    value = (field.default_factory() if field.default_factory is not None  # type: ignore[call-arg]
             else field.default)
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _describe_flags(settings_cls: type[ModelSelection], parser: Any) -> None:
    """Each generated flag's placeholder and default in words (``--models-file PATH``,
    ``(default: 3600)``), not pydantic-settings' type names (``{Path,null}``)."""
    for action in parser._actions:
        field = settings_cls.model_fields.get(action.dest)
        if field is None or not action.option_strings:
            continue
        if action.metavar is not None:
            metavar = CLI_METAVARS.get(action.dest) or _metavar_of_type(action.dest,
                                                                         field.annotation)
            if metavar is not None:
                action.metavar = metavar
        default = _default_in_words(field)
        text = field.description or ""
        if default is not None:
            text = f"{text} (default: {default})" if text else f"default: {default}"
        action.help = text.replace("%", "%%")  # argparse formats help with %


def settings_cli(
    settings_cls: type[ModelSelection], parser: Any
) -> CliSettingsSource[ModelSelection]:
    """Add one flag per field of ``settings_cls`` to the argparse ``parser``; the source
    returned turns the parsed namespace back into settings, above the environment::

        source = settings_cli(Settings, parser)
        settings = Settings(_cli_settings_source=source(parsed_args=namespace))
    """
    shortcuts = {name.replace("_", "-"): flag for name, flag in CLI_SHORTCUTS.items()
                 if name in settings_cls.model_fields}
    source: CliSettingsSource[ModelSelection] = CliSettingsSource(
        settings_cls, root_parser=parser, cli_shortcuts=shortcuts)
    # CliSuppress only hides a flag from the help; these must not exist at all (a secret
    # on the command line shows in `ps`; model tables belong in the TOML file).
    for action in list(parser._actions):
        if action.dest in NOT_FLAGS:
            parser._remove_action(action)
            for option in action.option_strings:
                parser._option_string_actions.pop(option, None)
    _describe_flags(settings_cls, parser)
    return source

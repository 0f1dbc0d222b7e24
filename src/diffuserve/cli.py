"""``diffuserve serve | generate | models``."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ValidationError

from diffuserve import __version__
from diffuserve.config import ModelSpec, Settings, parse_model_flag
from diffuserve.engine.base import Backend
from diffuserve.engine.types import GenerationParams, StepCallback
from diffuserve.errors import APIError, ModelLoadError

NO_MODEL_MESSAGE = """\
diffuserve: no model is configured (and the built-in model is not installed).

Serve any Hugging Face diffusers text-to-image pipeline, by Hub id or local folder:

  diffuserve serve --model sd15=stable-diffusion-v1-5/stable-diffusion-v1-5
  diffuserve serve --model ./my-pipeline --alias dall-e-3=my-pipeline

or list models in a TOML file ([[models]] tables with name, source, aliases,
resolution, steps, guidance_scale …) and pass --models-file models.toml
(or set DIFFUSERVE_MODELS_FILE)."""


def _settings_from_args(args: argparse.Namespace, fields: dict[str, str]) -> Settings:
    """CLI over environment over defaults: only flags actually given are passed."""
    overrides: dict[str, Any] = {}
    for dest, setting in fields.items():
        value = getattr(args, dest, None)
        if value is None or value == []:
            continue
        if dest == "model":
            value = tuple(parse_model_flag(item) for item in value)
        elif isinstance(value, list):
            value = tuple(value)
        overrides[setting] = value
    return Settings(**overrides)


def _with_builtin(settings: Settings) -> Settings:
    """With no model configured, the built-in one (when its weights are installed)."""
    from diffuserve import builtin

    if settings.models or not builtin.available():
        return settings
    return settings.model_copy(update={"models": (builtin.builtin_spec(),)})


def _fail(message: str, status: int = 2) -> int:
    print(message, file=sys.stderr)
    return status


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", metavar="[NAME=]SOURCE",
                        help="serve a diffusers pipeline from a Hub id or local folder "
                             "(repeatable); env DIFFUSERVE_MODELS (JSON)")
    parser.add_argument("--models-file", type=Path, metavar="TOML",
                        help="[[models]] tables; env DIFFUSERVE_MODELS_FILE")
    parser.add_argument("--alias", action="append", metavar="ALIAS=MODEL",
                        help="another public name for a model (repeatable); "
                             "env DIFFUSERVE_ALIASES")
    parser.add_argument("--default-model", metavar="NAME",
                        help="the model OpenAI's names point at (default: the first)")


SERVE_FIELDS = {
    "host": "host", "port": "port", "model": "models", "models_file": "models_file",
    "alias": "aliases", "default_model": "default_model", "api_key": "api_keys",
    "api_keys_file": "api_keys_file", "insecure_no_auth": "insecure_no_auth",
    "storage_dir": "storage_dir", "public_url": "public_url",
    "url_ttl": "url_ttl_seconds", "trusted_proxy": "trusted_proxies",
    "max_body_bytes": "max_body_bytes", "log_level": "log_level",
    "max_queue": "max_queue", "batching": "batching",
    "request_timeout": "request_timeout_seconds",
    "shutdown_timeout": "shutdown_timeout_seconds",
    "rate_limit_rpm": "rate_limit_rpm", "rate_limit_ipm": "rate_limit_ipm",
}
MODEL_FIELDS = {"model": "models", "models_file": "models_file", "alias": "aliases",
                "default_model": "default_model"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffuserve",
        description="OpenAI's Images API on local diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"diffuserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1); env DIFFUSERVE_HOST")
    serve.add_argument("--port", type=int, help="port (default 8000); env DIFFUSERVE_PORT")
    _add_model_flags(serve)
    serve.add_argument("--api-key", action="append", metavar="KEY",
                       help="accept this bearer key (repeatable); env DIFFUSERVE_API_KEYS")
    serve.add_argument("--api-keys-file", type=Path, metavar="FILE",
                       help="one key or sha256:<hex> per line; env DIFFUSERVE_API_KEYS_FILE")
    serve.add_argument("--insecure-no-auth", action="store_true", default=None,
                       help="allow a non-loopback bind without API keys")
    serve.add_argument("--storage-dir", type=Path, metavar="DIR",
                       help="where url images are kept; env DIFFUSERVE_STORAGE_DIR")
    serve.add_argument("--public-url", metavar="URL",
                       help="scheme://host[:port][/prefix] for image links; "
                            "env DIFFUSERVE_PUBLIC_URL")
    serve.add_argument("--url-ttl", type=int, metavar="SECONDS",
                       help="image link lifetime (default 3600); env DIFFUSERVE_URL_TTL_SECONDS")
    serve.add_argument("--trusted-proxy", action="append", metavar="IP/CIDR",
                       help="honour X-Forwarded-Proto/-Host from this address (repeatable); "
                            "env DIFFUSERVE_TRUSTED_PROXIES")
    serve.add_argument("--max-body-bytes", type=int, metavar="BYTES",
                       help="largest request body (default 1 MiB)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serving = serve.add_argument_group("serving")
    serving.add_argument("--max-queue", type=int, metavar="N",
                         help="requests waiting per model before 429 (default 64)")
    serving.add_argument("--no-batching", dest="batching", action="store_false", default=None,
                         help="never put several requests in one pipeline call")
    serving.add_argument("--request-timeout", type=float, metavar="SECONDS",
                         help="deadline of a generation request, queue included (default 540)")
    serving.add_argument("--shutdown-timeout", type=float, metavar="SECONDS",
                         help="on SIGTERM, how long running work may finish (default 30)")
    serving.add_argument("--rate-limit-rpm", type=int, metavar="N",
                         help="requests per minute per key (default 0: no limit)")
    serving.add_argument("--rate-limit-ipm", type=int, metavar="N",
                         help="images per minute per key (default 0: no limit)")

    generate = commands.add_parser("generate", help="draw one image without a server")
    generate.add_argument("prompt")
    generate.add_argument("--model", metavar="NAME|[NAME=]SOURCE",
                          help="a configured model or alias, or a Hub id / local folder")
    generate.add_argument("--models-file", type=Path, metavar="TOML")
    generate.add_argument("--size", default="1024x1024", help="WIDTHxHEIGHT (default 1024x1024)")
    generate.add_argument("--quality", help="standard | hd (more steps)")
    generate.add_argument("--style", help="vivid | natural")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--steps", type=int, dest="num_inference_steps")
    generate.add_argument("--guidance-scale", type=float)
    generate.add_argument("--negative-prompt")
    generate.add_argument("-o", "--output", type=Path, default=Path("image.png"))

    listing = commands.add_parser("models", help="list configured models and their aliases")
    _add_model_flags(listing)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("transformers").setLevel(logging.ERROR)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from diffuserve.app import build_app
    from diffuserve.logs import configure_logging

    settings = _with_builtin(_settings_from_args(args, SERVE_FIELDS))
    if not settings.models:
        return _fail(NO_MODEL_MESSAGE)
    configure_logging(settings.log_level)
    from diffuserve.app import build_keys

    if not build_keys(settings).enabled and not settings.is_loopback() \
            and not settings.insecure_no_auth:
        return _fail(
            f"diffuserve: refusing to listen on {settings.host} without API keys: anyone who "
            "can reach it could use it. Configure keys (--api-key, DIFFUSERVE_API_KEYS or "
            "--api-keys-file), bind a loopback address, or pass --insecure-no-auth."
        )
    _quiet_libraries()
    logger = logging.getLogger("diffuserve.server")
    logger.info("starting", extra={"fields": settings.safe_summary()})

    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = build_app(settings, on_fatal=on_fatal)

    class DrainingServer(uvicorn.Server):
        """On SIGTERM/SIGINT: queued requests get 503 at once, running ones finish."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            begin_drain = getattr(app.state, "begin_drain", None)
            if begin_drain is not None:
                begin_drain()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, proxy_headers=False,
        log_config=None, access_log=False,
        timeout_graceful_shutdown=int(math.ceil(settings.shutdown_timeout_seconds)),
    )
    server = DrainingServer(config)
    # uvicorn stops gracefully on SIGTERM/SIGINT, then re-raises the signal with the handler
    # that was in place before it: make that one a no-op, so a requested stop exits 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    server.run()
    if fatal:
        return _fail(f"diffuserve: {fatal[0]}", 1)
    return 0


def _spec_for_generate(settings: Settings, wanted: str | None) -> ModelSpec:
    """A configured model by name or alias, else ``wanted`` taken as ``[NAME=]SOURCE``."""
    if settings.models:
        target = wanted or settings.default_model or settings.models[0].name
        target = dict(settings.alias_pairs()).get(target, target)
        for spec in settings.models:
            if target == spec.name or target in spec.aliases:
                return spec
    if wanted is None:
        raise LookupError("no model")
    return parse_model_flag(wanted)


def cmd_generate(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from diffuserve.engine.backends.diffusers import DiffusersBackend
    from diffuserve.engine.registry import ModelRegistry, ServedModel
    from diffuserve.protocol import ImageGenerationRequest
    from diffuserve.service import encode_png, plan_request

    wanted = args.model
    args.model = None
    settings = _with_builtin(_settings_from_args(args, MODEL_FIELDS))
    try:
        spec = _spec_for_generate(settings, wanted)
    except LookupError:
        return _fail(NO_MODEL_MESSAGE)
    backend = DiffusersBackend(spec, show_progress=True)
    registry = ModelRegistry([ServedModel(spec, backend)])
    body = ImageGenerationRequest(
        prompt=args.prompt, model=spec.name, size=args.size, quality=args.quality,
        style=args.style, seed=args.seed, num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt,
    )
    try:
        plan = plan_request(registry, body)
        print(f"Loading {spec.source} ...", file=sys.stderr)
        backend.load()
        image = backend.generate(plan.params)[0]
    except APIError as exc:
        return _fail(f"diffuserve: {exc.message}")
    except ModelLoadError as exc:
        return _fail(f"diffuserve: {exc}", 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(encode_png(image))
    print(f"{args.output} ({image.width}x{image.height}, model {spec.name}, "
          f"seed {plan.params.seeds[0]}, {plan.params.num_inference_steps} steps)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from diffuserve.engine.registry import ModelRegistry

    settings = _with_builtin(_settings_from_args(args, MODEL_FIELDS))
    if not settings.models:
        return _fail(NO_MODEL_MESSAGE)
    registry = ModelRegistry.from_settings(settings, lambda spec: _Unloaded())
    for model in registry.models:
        spec = model.spec
        default = "  (default)" if model.name == registry.default_name else ""
        print(f"{spec.name}{default}")
        print(f"  source      {spec.source}")
        print(f"  aliases     {', '.join(registry.aliases_of(spec.name)) or '-'}")
        print(f"  resolution  {spec.resolution or 'from the model'}")
        print(f"  steps       {spec.steps} (hd {spec.effective_hd_steps}), "
              f"guidance {spec.guidance_scale:g}")
    return 0


class _Unloaded(Backend):
    """Stands in for a backend when only names are listed."""

    device = "none"

    @property
    def loaded(self) -> bool:
        return False

    def load(self) -> None:
        raise NotImplementedError

    def generate(
        self, params: GenerationParams, on_step: StepCallback | None = None
    ) -> list[Image.Image]:
        raise NotImplementedError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "generate":
            return cmd_generate(args)
        return cmd_models(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        return _fail(f"diffuserve: invalid configuration: {problems}")
    except (OSError, ValueError) as exc:
        return _fail(f"diffuserve: {exc}")

"""``diffuserve serve | generate | models``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import CliSettingsSource

from diffuserve import __version__
from diffuserve.config import ModelSelection, Settings, parse_model_flag, settings_cli
from diffuserve.storage.signing import SigningKeyUnusable

if TYPE_CHECKING:
    from PIL import Image

    from diffuserve.engine.local.engine import LocalEngine
    from diffuserve.engine.types import GenerationParams
    from diffuserve.service.catalog import ModelCatalog

S = TypeVar("S", bound=ModelSelection)

NO_MODEL_MESSAGE = """\
diffuserve: no model is configured (and the built-in model is not installed).

Serve any Hugging Face diffusers text-to-image pipeline, by Hub id or local folder:

  diffuserve serve --model sd15=stable-diffusion-v1-5/stable-diffusion-v1-5
  diffuserve serve --model ./my-pipeline --alias dall-e-3=my-pipeline

or list models in a TOML file ([[models]] tables with name, source, aliases,
resolution, steps, guidance_scale …) and pass --models-file models.toml
(or set DIFFUSERVE_MODELS_FILE)."""


def _settings(source: CliSettingsSource[Any], args: argparse.Namespace,
              settings_cls: type[ModelSelection]) -> Any:
    """CLI over environment over defaults: the flags are the settings' own fields."""
    # pydantic-settings takes its private init arguments untyped.
    return settings_cls(_cli_settings_source=source(parsed_args=args))  # type: ignore[call-arg]


#: Seconds past the shutdown grace period before uvicorn closes what is still open.
SHUTDOWN_MARGIN_SECONDS = 5


def _with_builtin(settings: S) -> S:
    """With no model configured, the built-in one (when its weights are installed)."""
    from diffuserve import builtin

    if settings.models or not builtin.available():
        return settings
    return settings.model_copy(update={"models": (builtin.builtin_spec(),)})


#: Logged at start-up when ``--api-key`` was used; never with the key itself.
KEYS_ON_COMMAND_LINE_WARNING = (
    "API keys given with --api-key are visible to every local user in the process list "
    "(ps, /proc/PID/cmdline): set DIFFUSERVE_API_KEYS or use --api-keys-file instead")


def _keys_on_command_line(args: argparse.Namespace) -> bool:
    """Whether ``--api-key``/``--api-keys`` carried a key: the parsed flags hold only what
    the command line gave (pydantic-settings suppresses their defaults), never the
    environment's."""
    given = getattr(args, "api_keys", None) or ()
    return any(str(value).strip() for value in given)


def _fail(message: str, status: int = 2) -> int:
    print(message, file=sys.stderr)
    return status


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, CliSettingsSource[Any]]]:
    """The parser, and for each command the settings source that reads its flags back."""
    parser = argparse.ArgumentParser(
        prog="diffuserve",
        description="OpenAI's Images API on local diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"diffuserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sources: dict[str, CliSettingsSource[Any]] = {}

    serve = commands.add_parser(
        "serve", help="run the HTTP server",
        description="Run the HTTP server. Every flag is also a DIFFUSERVE_* environment "
                    "variable (--url-ttl-seconds: DIFFUSERVE_URL_TTL_SECONDS); flags win.")
    sources["serve"] = settings_cli(Settings, serve)

    generate = commands.add_parser(
        "generate", help="draw one image without a server",
        description="Draw one image with the models the server would serve: --model takes "
                    "the names a request's `model` takes (OpenAI's names included, with "
                    "their rules), else a Hugging Face Hub id or local folder.")
    generate.add_argument("prompt")
    generate.add_argument("--model", metavar="NAME|[NAME=]SOURCE",
                          help="a served model name or alias, as in a request (dall-e-2, "
                               "dall-e-3 and gpt-image-1 point at the default model unless "
                               "a model claims them), else a Hub id or local folder "
                               "(default: the default model)")
    generate.add_argument("--size", default="1024x1024", metavar="WIDTHxHEIGHT",
                          help="(default: 1024x1024)")
    generate.add_argument("--quality", metavar="QUALITY",
                          help="standard | hd, or low | medium | high for gpt-image names "
                               "(more steps)")
    generate.add_argument("--style", metavar="STYLE", help="vivid | natural")
    generate.add_argument("--seed", type=int, metavar="N", help="(default: random)")
    generate.add_argument("--steps", type=int, dest="num_inference_steps", metavar="N",
                          help="denoising steps (default: the model's for the quality)")
    generate.add_argument("--guidance-scale", type=float, metavar="NUMBER",
                          help="(default: the model's for the style)")
    generate.add_argument("--negative-prompt", metavar="TEXT")
    generate.add_argument("-o", "--output", type=Path, default=Path("image.png"),
                          metavar="PATH", help="PNG file to write (default: image.png)")
    sources["generate"] = settings_cli(ModelSelection, generate)

    listing = commands.add_parser("models", help="list configured models and their aliases")
    sources["models"] = settings_cli(Settings, listing)

    ray_config = commands.add_parser(
        "ray-config", help="write the Ray Serve config of these settings",
        description="Write the Ray Serve config file (for `serve deploy` or a KubeRay "
                    "RayService) of the server these flags describe. Secrets are left "
                    "out: each replica reads them from its DIFFUSERVE_* environment.")
    ray_config.add_argument("-o", "--output", type=Path, help="file (default: stdout)")
    sources["ray-config"] = settings_cli(Settings, ray_config)
    return parser, sources


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("transformers").setLevel(logging.ERROR)


def cmd_serve(args: argparse.Namespace, source: CliSettingsSource[Any]) -> int:
    import uvicorn

    from diffuserve.api.server import HttpLimits, build_server
    from diffuserve.app import build_app
    from diffuserve.logs import configure_logging
    from diffuserve.service.catalog import ModelCatalog

    settings = _with_builtin(_settings(source, args, Settings))
    if not settings.models:
        return _fail(NO_MODEL_MESSAGE)
    # The public names (aliases, edit_model) are checked before anything starts, on Ray
    # too, where the catalog is built only on the ingress replicas.
    ModelCatalog.from_settings(settings)
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
    if _keys_on_command_line(args):
        logger.warning(KEYS_ON_COMMAND_LINE_WARNING)
    if settings.ray:
        return _serve_on_ray(settings, logger)

    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = build_app(settings, on_fatal=on_fatal)

    def begin_drain() -> None:
        drain = getattr(app.state, "begin_drain", None)  # set once the app has started
        if drain is not None:
            drain()

    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers,
        header_timeout=settings.header_timeout_seconds,
        keep_alive_timeout=settings.keep_alive_timeout_seconds,
        max_connections=settings.max_connections,
    )
    server = build_server(
        app, host=settings.host, port=settings.port, limits=limits,
        # The engine refuses what still runs when the grace period ends; the margin lets
        # those 503s reach their clients before uvicorn cuts the connections.
        shutdown_timeout=settings.shutdown_timeout_seconds + SHUTDOWN_MARGIN_SECONDS,
        on_stop_signal=begin_drain,
    )
    # uvicorn stops gracefully on SIGTERM/SIGINT, then re-raises the signal with the handler
    # that was in place before it: make that one a no-op, so a requested stop exits 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    if settings.playground and settings.port:
        print(f"diffuserve: open {_page_url(settings)} in a browser for the playground",
              file=sys.stderr, flush=True)
    server.run()
    if fatal:
        return _fail(f"diffuserve: {fatal[0]}", 1)
    return 0


def _page_url(settings: Settings) -> str:
    """Where a browser finds the playground: the public URL, else the bound address (a
    wildcard bind is reachable on loopback)."""
    if settings.public_url:
        return settings.public_url + "/"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/"


RAY_MISSING = 'diffuserve: --ray needs Ray Serve: pip install "diffuserve[ray]"'


def _serve_on_ray(settings: Settings, logger: logging.Logger) -> int:
    """The same application as a Ray Serve application, until SIGTERM or SIGINT."""
    try:
        from diffuserve.deploy import ray_serve
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "ray":
            return _fail(RAY_MISSING)
        raise
    def ready(url: str) -> None:
        logger.info("ready", extra={"fields": {"url": url, "mode": "ray"}})
        print(f"diffuserve is serving on Ray at {url}", file=sys.stderr, flush=True)

    try:
        ray_serve.run(settings, ready=ready)
    except ray_serve.DeployFailed as exc:
        return _fail(f"diffuserve: {exc}", 1)
    return 0


def cmd_ray_config(args: argparse.Namespace, source: CliSettingsSource[Any]) -> int:
    """Write the Serve config of these settings: ``serve deploy`` or a KubeRay RayService."""
    try:
        import yaml

        from diffuserve.deploy import ray_serve
    except ImportError:
        return _fail(RAY_MISSING)
    settings = _with_builtin(_settings(source, args, Settings))
    if not settings.models:
        return _fail(NO_MODEL_MESSAGE)
    problem = ray_serve.check_shared_state(settings)
    if problem is not None:
        return _fail(f"diffuserve: {problem}")
    text = ray_serve.CONFIG_HEADER + yaml.safe_dump(ray_serve.serve_config(settings),
                                                    sort_keys=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}; deploy it with: serve deploy {args.output}",
              file=sys.stderr)
    return 0


def _catalog_for_generate(settings: ModelSelection,
                          wanted: str | None) -> tuple[ModelCatalog, str]:
    """The catalog the server would build from these settings and the name to ask it for.

    A served name or alias (OpenAI's names included) resolves exactly as a request's
    ``model`` does; anything else is ``[NAME=]SOURCE``, a Hub id or a local folder, served
    alone. An OpenAI name is never taken for a Hub id: unserved, it is a LookupError
    whose message says what to do.
    """
    from diffuserve.protocol.rules import OPENAI_MODEL_NAMES
    from diffuserve.service.catalog import ModelCatalog

    if not settings.models:
        if wanted is None or wanted in OPENAI_MODEL_NAMES:
            raise LookupError(NO_MODEL_MESSAGE)
    else:
        catalog = ModelCatalog.from_settings(settings)
        if wanted is None:
            return catalog, catalog.default_name
        if any(name == wanted for name, _ in catalog.names()):
            return catalog, wanted
        if wanted in OPENAI_MODEL_NAMES:
            served = ", ".join(spec.name for spec in catalog.specs)
            raise LookupError(
                f"diffuserve: no model here serves {wanted!r}, one of OpenAI's names "
                f"(automatic aliases are off): ask for one of {served}, or point it at one "
                f"with --alias {wanted}=MODEL")
    spec = parse_model_flag(wanted)
    return ModelCatalog([spec]), spec.name


def cmd_generate(args: argparse.Namespace, source: CliSettingsSource[Any]) -> int:
    """One image through the same engine the server uses, its steps as a progress bar."""
    _quiet_libraries()
    import asyncio

    from diffuserve.engine.errors import EngineError
    from diffuserve.engine.local.engine import LocalEngine
    from diffuserve.engine.plugins import create_backends
    from diffuserve.protocol.errors import ClientError
    from diffuserve.protocol.generations import ImageGenerationRequest
    from diffuserve.service.output import encode_png
    from diffuserve.service.planning import plan_generation

    settings = _with_builtin(_settings(source, args, ModelSelection))
    try:
        catalog, name = _catalog_for_generate(settings, args.model)
    except LookupError as exc:
        return _fail(str(exc))
    body = ImageGenerationRequest(
        prompt=args.prompt, model=name, size=args.size, quality=args.quality,
        style=args.style, seed=args.seed, num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt,
    )
    try:
        # The request's rules are those of the name asked for (dall-e-3's sizes and
        # revised prompt); the engine loads only the model that name resolved to.
        plan = plan_generation(catalog, body)
        spec = plan.spec
        engine = LocalEngine([spec], create_backends((spec,)), max_queue=1)
        print(f"Loading {spec.source} ...", file=sys.stderr)
        engine.load_all()
        defaults = engine.backend(spec.name).defaults
        if defaults is not None:  # the model's own steps and guidance, known once loaded
            plan = plan_generation(catalog, body, defaults)
        image = asyncio.run(_draw_with_progress(engine, plan.spec.name, plan.params))
    except ClientError as exc:
        return _fail(f"diffuserve: {exc.message}")
    except EngineError as exc:
        return _fail(f"diffuserve: {exc}", 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(encode_png(image))
    served = name if name == spec.name else f"{name} (served by {spec.name})"
    print(f"{args.output} ({image.width}x{image.height}, model {served}, "
          f"seed {plan.params.seeds[0]}, {plan.params.num_inference_steps} steps)")
    if plan.revised_prompt is not None and plan.revised_prompt != args.prompt:
        print(f"revised prompt: {plan.revised_prompt}")
    return 0


async def _draw_with_progress(engine: LocalEngine, model: str,
                              params: GenerationParams) -> Image.Image:
    from tqdm import tqdm

    from diffuserve.engine.types import Progress, Result, Task

    try:
        with tqdm(total=params.num_inference_steps, unit="step", file=sys.stderr) as bar:
            async for event in engine.stream(Task(model=model, params=params, progress=True)):
                if isinstance(event, Progress):
                    bar.update(event.step - bar.n)
                elif isinstance(event, Result):
                    return event.images[0]
    finally:
        await engine.stop()
    raise RuntimeError("the engine ended without an image")


def cmd_models(args: argparse.Namespace, source: CliSettingsSource[Any]) -> int:
    from diffuserve.service.catalog import ModelCatalog
    from diffuserve.service.planning import hd_steps

    settings = _with_builtin(_settings(source, args, Settings))
    if not settings.models:
        return _fail(NO_MODEL_MESSAGE)
    catalog = ModelCatalog.from_settings(settings)
    for spec in catalog.specs:
        default = "  (default)" if spec.name == catalog.default_name else ""
        print(f"{spec.name}{default}")
        print(f"  source      {spec.source}")
        print(f"  backend     {spec.backend}")
        print(f"  aliases     {', '.join(catalog.aliases_of(spec.name)) or '-'}")
        print(f"  resolution  {spec.resolution or 'from the model'}")
        own = "the model's own (read at load)"
        steps = own if spec.steps is None else f"{spec.steps} (hd {hd_steps(spec)})"
        guidance = own if spec.guidance_scale is None else f"{spec.guidance_scale:g}"
        print(f"  steps       {steps}, guidance {guidance}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, sources = build_parser()
    args = parser.parse_args(argv)
    source = sources[args.command]
    try:
        if args.command == "serve":
            return cmd_serve(args, source)
        if args.command == "generate":
            return cmd_generate(args, source)
        if args.command == "ray-config":
            return cmd_ray_config(args, source)
        return cmd_models(args, source)
    except SigningKeyUnusable as exc:
        # Not a usage error but a file to look at: one paragraph and status 1, as for a
        # model that cannot load.
        return _fail(f"diffuserve: {exc.reason}", 1)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        return _fail(f"diffuserve: invalid configuration: {problems}")
    except (OSError, ValueError) as exc:
        return _fail(f"diffuserve: {exc}")

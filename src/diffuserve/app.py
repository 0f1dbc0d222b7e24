"""build_app(settings) → the FastAPI application, its parts wired once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from diffuserve import __version__
from diffuserve.api import health, images, metrics, models
from diffuserve.api.deps import ServerParts
from diffuserve.api.errors import install_error_handlers
from diffuserve.api.middleware import RequestContextMiddleware
from diffuserve.api.urls import BaseUrlResolver
from diffuserve.auth import KeyEntry, KeyStore, read_keys_file
from diffuserve.config import Settings
from diffuserve.engine.backends import create_backend
from diffuserve.engine.registry import ModelRegistry
from diffuserve.engine.scheduler import SchedulerPool
from diffuserve.errors import ModelLoadError
from diffuserve.metrics import Metrics
from diffuserve.ratelimit import Limits, RateLimiter
from diffuserve.service import ImageService
from diffuserve.storage.local import LocalImageStore
from diffuserve.storage.signing import UrlSigner, load_or_create_secret

logger = logging.getLogger("diffuserve.server")

#: Called with a one-paragraph message when the server cannot go on (a model failed to
#: load); the CLI prints it and stops the server with exit status 1.
FatalHandler = Callable[[str], None]


def build_keys(settings: Settings) -> KeyStore:
    entries = [KeyEntry(key.get_secret_value()) for key in settings.api_keys]
    if settings.api_keys_file is not None:
        entries += read_keys_file(settings.api_keys_file)
    defaults = Limits(requests_per_minute=settings.rate_limit_rpm or None,
                      images_per_minute=settings.rate_limit_ipm or None)
    return KeyStore(entries, defaults)


def build_app(
    settings: Settings,
    registry: ModelRegistry | None = None,
    on_fatal: FatalHandler | None = None,
) -> FastAPI:
    """Wire the server. Models load in the background after start-up: ``/health``
    answers at once, ``/ready`` once every model is loaded."""
    registry = registry or ModelRegistry.from_settings(settings, create_backend)
    store = LocalImageStore(settings.storage_dir, settings.url_ttl_seconds)
    secret = (
        settings.signing_secret.get_secret_value().encode()
        if settings.signing_secret is not None
        else load_or_create_secret(settings.storage_dir)
    )
    signer = UrlSigner(secret, settings.url_ttl_seconds)
    server_metrics = Metrics(max_users=settings.metrics_max_users)
    schedulers = SchedulerPool(
        server_metrics, max_queue=settings.max_queue, batching=settings.batching
    )
    server = ServerParts(
        service=ImageService(
            registry, schedulers, store, signer,
            request_timeout=settings.request_timeout_seconds,
        ),
        registry=registry,
        schedulers=schedulers,
        store=store,
        signer=signer,
        keys=build_keys(settings),
        limiter=RateLimiter(),
        metrics=server_metrics,
        base_url=BaseUrlResolver(settings.public_url, settings.trusted_proxies),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        # Called from a signal handler when a stop is requested: answer what is queued
        # with 503 at once; running work finishes while the server drains connections.
        app.state.begin_drain = lambda: loop.call_soon_threadsafe(schedulers.drain)
        sweeper = asyncio.create_task(_sweep_forever(store, settings.sweep_interval_seconds))
        if not registry.ready:
            _load_in_background(registry, on_fatal)
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await schedulers.stop()

    app = FastAPI(
        title="diffuserve",
        version=__version__,
        summary="OpenAI's Images API on local diffusion models",
        lifespan=lifespan,
    )
    app.state.parts = server
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    app.include_router(images.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app


def _load_in_background(registry: ModelRegistry, on_fatal: FatalHandler | None) -> None:
    # A daemon thread, not the event loop's executor: a shutdown during a long download
    # must not wait for it.
    def load() -> None:
        started = time.perf_counter()
        try:
            registry.load_all()
        except ModelLoadError as exc:
            logger.error("model load failed", extra={"fields": {"error": str(exc)}})
            if on_fatal is not None:
                on_fatal(str(exc))
            return
        except Exception as exc:  # an unexpected failure is still fatal, and readable
            logger.exception("model load failed")
            if on_fatal is not None:
                on_fatal(f"Could not load the configured models: {type(exc).__name__}: {exc}")
            return
        logger.info(
            "ready",
            extra={"fields": {"load_seconds": round(time.perf_counter() - started, 2)}},
        )

    threading.Thread(target=load, name="diffuserve-load", daemon=True).start()


async def _sweep_forever(store: LocalImageStore, interval: float) -> None:
    while True:
        try:
            removed = await asyncio.to_thread(store.sweep, time.time())
            if removed:
                logger.info("swept expired images", extra={"fields": {"removed": removed}})
        except OSError:
            logger.exception("sweeping expired images failed")
        await asyncio.sleep(interval)

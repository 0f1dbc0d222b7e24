"""build_app(settings) → the FastAPI application, its parts wired once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from fastapi import FastAPI

from diffuserve import __version__
from diffuserve.api.admission import Admission
from diffuserve.api.auth import KeyStore
from diffuserve.api.cors import CorsForOrigins, answer_headers
from diffuserve.api.deps import ServerParts
from diffuserve.api.errors import install_error_handlers
from diffuserve.api.middleware import RequestContextMiddleware
from diffuserve.api.openapi import install_docs
from diffuserve.api.ratelimit import RateLimiter, RateLimitStorageUnavailable
from diffuserve.api.remote import fetch_image_url
from diffuserve.api.routes import (
    edits,
    files,
    generations,
    health,
    metrics,
    models,
    playground,
    provenance,
)
from diffuserve.api.urls import BaseUrlResolver
from diffuserve.config import Settings
from diffuserve.config.keys import KeyEntry, key_entries
from diffuserve.config.limits import Limits
from diffuserve.config.urls import parse_storage_url
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.client import EngineClient
from diffuserve.engine.local.engine import LocalEngine
from diffuserve.metrics import Metrics
from diffuserve.service.catalog import ModelCatalog
from diffuserve.service.checks import ProvenanceChecker
from diffuserve.service.credentials import configured_identity, trust_anchors
from diffuserve.service.images import ImageService
from diffuserve.service.moderation import Moderation, load_policy
from diffuserve.service.provenance import Provenance
from diffuserve.service.watermark import payload_for
from diffuserve.storage.base import ImageStore, StorageUnavailable
from diffuserve.storage.local import LocalImageStore
from diffuserve.storage.s3 import S3ImageStore
from diffuserve.storage.signing import UrlSigner, load_or_create_secret

logger = logging.getLogger("diffuserve.server")

#: Called with a one-paragraph message when the server cannot go on (a model failed to
#: load, the image store cannot be reached); the CLI prints it and stops the server with
#: exit status 1.
FatalHandler = Callable[[str], None]


def build_keys(settings: Settings, entries: Sequence[KeyEntry] | None = None) -> KeyStore:
    """The key store of ``entries`` (default: the configured keys), with the default
    limits."""
    entries = key_entries(settings) if entries is None else list(entries)
    defaults = Limits(requests_per_minute=settings.rate_limit_rpm or None,
                      images_per_minute=settings.rate_limit_ipm or None)
    return KeyStore(entries, defaults)


def build_store(settings: Settings) -> ImageStore:
    if settings.storage_url is not None:
        # The bucket presigns its own links: no signing key is needed, none is made.
        return S3ImageStore(parse_storage_url(settings.storage_url), settings.url_ttl_seconds,
                            sweep=settings.storage_sweep,
                            sweep_interval=settings.sweep_interval_seconds)
    secret = (
        settings.signing_secret.get_secret_value().encode()
        if settings.signing_secret is not None
        else load_or_create_secret(settings.storage_dir)
    )
    return LocalImageStore(
        settings.storage_dir, settings.url_ttl_seconds,
        UrlSigner(secret, settings.url_ttl_seconds), link_path=files.FILES_ROUTE,
        sweep_interval=settings.sweep_interval_seconds,
    )


def build_app(
    settings: Settings,
    *,
    engine: EngineClient | None = None,
    backends: Mapping[str, Backend] | None = None,
    keys: Sequence[KeyEntry] | None = None,
    on_fatal: FatalHandler | None = None,
) -> FastAPI:
    """Wire the server. Models load in the background after start-up: ``/health``
    answers at once, ``/ready`` once every model is loaded.

    ``engine`` replaces the in-process engine; ``backends`` (model name → backend)
    replace the registered runtimes of an in-process one; ``keys`` replace the configured
    keys (replicas get them from where the application was built).
    """
    server_metrics = Metrics(max_users=settings.metrics_max_users)
    if engine is None:
        engine = LocalEngine.from_settings(settings, backends=backends,
                                           metrics=server_metrics, on_load_failure=on_fatal)
    store = build_store(settings)
    catalog = ModelCatalog.from_settings(settings)
    identity = configured_identity(settings)
    marker = Provenance(identity, watermarks=settings.provenance_watermark) \
        if settings.provenance and identity is not None else None
    service = ImageService(
        catalog, engine, store, request_timeout=settings.request_timeout_seconds,
        png_compress_level=settings.png_compress_level,
        moderation=Moderation(load_policy(settings.content_policy)
                              if settings.content_policy else None),
        fetch_image=fetch_image_url, provenance=marker)
    server = ServerParts(
        service=service,
        engine=engine,
        store=store,
        keys=build_keys(settings, keys),
        admission=Admission(RateLimiter(settings.rate_limit_storage), server_metrics),
        metrics=server_metrics,
        base_url=BaseUrlResolver(settings.public_url, settings.trusted_proxies),
        # Checks decode within the same pixel budget as the edits' uploads.
        checks=ProvenanceChecker(
            service.uploads, trust_anchors=trust_anchors(settings),
            payload=payload_for(identity.public_key) if identity is not None else None),
        allow_remote_image_urls=settings.allow_remote_image_urls,
    )
    running_engine = engine

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def shutdown_begins() -> None:
            # Queued work is refused at once; running work may finish within the grace
            # period, after which it is refused too (503 + Retry-After), before the
            # HTTP server's own deadline would cut its connections.
            running_engine.drain()
            loop.call_later(settings.shutdown_timeout_seconds, running_engine.abort)

        # Called from a signal handler when a stop is requested.
        app.state.begin_drain = lambda: loop.call_soon_threadsafe(shutdown_begins)
        # First: a shared limit storage that does not answer stops the start at once,
        # before any model loads.
        try:
            await server.admission.start()
        except RateLimitStorageUnavailable as exc:
            if on_fatal is None:
                raise
            on_fatal(str(exc))  # one paragraph and exit status 1, as below
            yield
            return
        try:
            await store.start()
        except StorageUnavailable as exc:
            if on_fatal is None:
                raise
            # As for a model that cannot load: one paragraph and exit status 1, not a
            # traceback; the server stops before it answers anything.
            logger.error("the image store cannot be used", extra={"fields": {
                "error": exc.reason}})
            on_fatal(exc.reason)
            await server.admission.stop()
            yield
            return
        await running_engine.start()
        try:
            yield
        finally:
            await store.stop()
            await server.admission.stop()
            await running_engine.stop()

    app = FastAPI(
        title="diffuserve",
        version=__version__,
        summary="OpenAI's Images API on local diffusion models",
        lifespan=lifespan,
        # Served by install_docs, behind the keys, with the real limits.
        openapi_url=None, docs_url=None, redoc_url=None,
    )
    app.state.parts = server
    install_error_handlers(app)
    if settings.cors_origins:
        # Inside the request ids (a preflight's answer carries one and is logged), outside
        # everything else: a preflight is answered before any key is asked for.
        app.add_middleware(CorsForOrigins, origins=settings.cors_origins)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes,
                       upload_paths=(*edits.UPLOAD_PATHS, provenance.CHECKS_ROUTE),
                       max_upload_bytes=settings.max_upload_bytes,
                       answer_headers=functools.partial(answer_headers, settings.cors_origins))
    app.include_router(generations.router)
    app.include_router(edits.router)
    app.include_router(provenance.router)
    if isinstance(store, LocalImageStore):
        # Only the local store's links point here; an S3 link points at the bucket.
        app.include_router(files.router_for(store))
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    if settings.playground:
        app.include_router(playground.router_for(playground.load_web_files()))
    install_docs(app, settings.api_docs)
    return app

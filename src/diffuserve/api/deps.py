"""Request-scoped dependencies: the server's parts and the API key check."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from diffuserve.api.urls import BaseUrlResolver
from diffuserve.auth import Client, KeyStore
from diffuserve.engine.registry import ModelRegistry
from diffuserve.engine.scheduler import SchedulerPool
from diffuserve.metrics import Metrics
from diffuserve.ratelimit import RateLimiter
from diffuserve.service import ImageService
from diffuserve.storage.base import ImageStore
from diffuserve.storage.signing import UrlSigner


@dataclass
class ServerParts:
    """What the routers need, built once by :func:`diffuserve.app.build_app`."""

    service: ImageService
    registry: ModelRegistry
    schedulers: SchedulerPool
    store: ImageStore
    signer: UrlSigner
    keys: KeyStore
    limiter: RateLimiter
    metrics: Metrics
    base_url: BaseUrlResolver


def parts(request: Request) -> ServerParts:
    result: ServerParts = request.app.state.parts
    return result


def authenticate(request: Request) -> Client:
    return parts(request).keys.check(request.headers.get("authorization"))


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))

"""Request-scoped dependencies: the server's parts and the API key check."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from diffuserve.api.admission import Admission
from diffuserve.api.auth import Client, KeyStore
from diffuserve.api.urls import BaseUrlResolver
from diffuserve.engine.client import EngineClient
from diffuserve.metrics import Metrics
from diffuserve.service.checks import ProvenanceChecker
from diffuserve.service.images import ImageService
from diffuserve.storage.base import ImageStore


@dataclass
class ServerParts:
    """What the routers need, built once by :func:`diffuserve.app.build_app`."""

    service: ImageService
    engine: EngineClient
    store: ImageStore
    keys: KeyStore
    admission: Admission
    metrics: Metrics
    base_url: BaseUrlResolver
    #: Answers content provenance checks.
    checks: ProvenanceChecker
    #: Fetch the JSON edit form's http(s) image URLs (public addresses only).
    allow_remote_image_urls: bool = False


def parts(request: Request) -> ServerParts:
    result: ServerParts = request.app.state.parts
    return result


async def authenticate(request: Request) -> Client:
    # A coroutine, though it never waits: FastAPI runs a plain function dependency on a
    # worker thread, a hop that cost every request half a millisecond (one SHA-256 of
    # a header of bounded size is microseconds).
    return parts(request).keys.check(request.headers.get("authorization"))


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))

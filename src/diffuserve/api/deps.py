"""Request-scoped dependencies: the server's parts and the API key check."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from diffuserve.api.urls import BaseUrlResolver
from diffuserve.auth import KeyStore
from diffuserve.engine.registry import ModelRegistry
from diffuserve.service import ImageService
from diffuserve.storage.base import ImageStore
from diffuserve.storage.signing import UrlSigner


@dataclass
class ServerParts:
    """What the routers need, built once by :func:`diffuserve.app.build_app`."""

    service: ImageService
    registry: ModelRegistry
    store: ImageStore
    signer: UrlSigner
    keys: KeyStore
    base_url: BaseUrlResolver


def parts(request: Request) -> ServerParts:
    result: ServerParts = request.app.state.parts
    return result


def require_api_key(request: Request) -> None:
    parts(request).keys.check(request.headers.get("authorization"))


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))

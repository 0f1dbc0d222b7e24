"""The scheme and host that image links must carry to be fetchable by the client."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import Request


class BaseUrlResolver:
    """``--public-url`` if set; else the ``X-Forwarded-Proto``/``-Host`` of a trusted
    proxy; else the request's own scheme and ``Host``."""

    def __init__(self, public_url: str | None, trusted_proxies: Iterable[str]) -> None:
        self.public_url = public_url.rstrip("/") if public_url else None
        self.trusted = tuple(ipaddress.ip_network(item, strict=False) for item in trusted_proxies)

    def _is_trusted(self, host: str | None) -> bool:
        if not host or not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def __call__(self, request: Request) -> str:
        if self.public_url:
            return self.public_url
        scheme = request.url.scheme
        host = request.headers.get("host") or request.url.netloc
        prefix = request.scope.get("root_path", "")
        if self._is_trusted(request.client.host if request.client else None):
            # A proxy may append to these headers; the first value is the client's.
            forwarded_proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
            forwarded_host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
            if forwarded_proto in ("http", "https"):
                scheme = forwarded_proto
            if forwarded_host:
                host = forwarded_host
            forwarded_prefix = request.headers.get("x-forwarded-prefix", "").strip()
            if forwarded_prefix.startswith("/"):
                prefix = forwarded_prefix.rstrip("/")
        return f"{scheme}://{host}{prefix}"

"""Fetching the JSON edit form's remote ``image_url``s — only where the operator turned it
on (``--allow-remote-image-urls``), and never from a private address.

A server that fetches URLs for its clients can be made to reach what only it can reach
(cloud metadata, the local network): every address the host resolves to must be public,
redirects are not followed, and the fetch is bounded in bytes and time. The name is
resolved before connecting, so a host that resolves differently a moment later could
still slip through; where that matters, keep this off and let clients send data URLs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.uploads import Upload

FETCH_TIMEOUT_SECONDS = 10.0


def is_public(address: str) -> bool:
    return ipaddress.ip_address(address).is_global


async def fetch_image_url(url: str, param: str, *, max_bytes: int) -> Upload:
    """The image at ``url``, or OpenAI's 400 naming ``param``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(f"Invalid '{param}': only http and https URLs are fetched.",
                                  param=param, code="invalid_image_url")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidRequestError(f"Invalid '{param}': the host could not be resolved.",
                                  param=param, code="invalid_image_url") from None
    if not infos or not all(is_public(str(info[4][0])) for info in infos):
        raise InvalidRequestError(f"Invalid '{param}': the URL points at a private address.",
                                  param=param, code="invalid_image_url")
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS,
                                     follow_redirects=False) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise InvalidRequestError(
                    f"Invalid '{param}': fetching it answered {response.status_code}.",
                    param=param, code="invalid_image_url")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise InvalidRequestError(
                        f"Invalid '{param}': the image is larger than {max_bytes} bytes.",
                        param=param, code="image_too_large")
            content_type = response.headers.get("content-type", "")
    except httpx.HTTPError as exc:
        raise InvalidRequestError(f"Invalid '{param}': it could not be fetched "
                                  f"({type(exc).__name__}).", param=param,
                                  code="invalid_image_url") from None
    return Upload(filename=parts.path.rsplit("/", 1)[-1] or param, content_type=content_type,
                  data=bytes(data))

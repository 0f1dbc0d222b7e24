"""Fetching the JSON edit form's remote ``image_url``s — only where the operator turned it
on (``--allow-remote-image-urls``), and never from a private address.

A server that fetches URLs for its clients can be made to reach what only it can reach
(cloud metadata, the local network). So:

- the host is resolved once, every address it resolves to must be public (IPv6 forms
  that carry an IPv4 address — mapped, compatible, NAT64, 6to4, Teredo — are judged by
  that address too), and the connection goes to the address that was checked (the URL's
  host is kept for ``Host`` and TLS), so a name that resolves differently a moment
  later cannot slip through;
- redirects are not followed, and no proxy from the environment is used;
- one deadline covers the whole fetch (connecting, TLS and every read), and the body is
  bounded in bytes while it arrives;
- callers fetch only for a request already validated and admitted, no more URLs than
  the images it may send, and stop when its client leaves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.uploads import Upload

#: The whole of one fetch: connecting, TLS, the answer and every byte of its body.
FETCH_DEADLINE_SECONDS = 20.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and so reaches), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour,
             *(address.teredo or ())]
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [ipv4 for ipv4 in found if ipv4 is not None]


def is_public(address: str) -> bool:
    """``address`` and every IPv4 address it carries are globally reachable ones."""
    parsed = ipaddress.ip_address(address)
    return parsed.is_global and all(ipv4.is_global for ipv4 in _embedded_ipv4(parsed))


def _refused(param: str, reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {reason}", param=param,
                               code="invalid_image_url")


async def _resolve(host: str, port: int, param: str) -> str:
    """The one address the fetch connects to, once every address of ``host`` is checked."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except OSError:
        raise _refused(param, "the host could not be resolved.") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public(address) for address in addresses):
        raise _refused(param, "the URL points at a private address.")
    return addresses[0]


async def fetch_image_url(url: str, param: str, *, max_bytes: int,
                          deadline_seconds: float = FETCH_DEADLINE_SECONDS) -> Upload:
    """The image at ``url``, or OpenAI's 400 naming ``param``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused(param, "only http and https URLs are fetched.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _refused(param, "the URL's port is not valid.") from None
    try:
        async with asyncio.timeout(deadline_seconds):
            return await _fetch(parts, port, param, max_bytes)
    except TimeoutError:
        raise _refused(param, f"it was not fetched within {deadline_seconds:g} "
                              "seconds.") from None


async def _fetch(split: SplitResult, port: int, param: str, max_bytes: int) -> Upload:
    host = split.hostname or ""
    address = await _resolve(host, port, param)
    literal = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((split.scheme, f"{literal}:{port}", split.path or "/", split.query,
                         ""))
    headers = {"Host": split.netloc.rpartition("@")[2]}
    extensions = {"sni_hostname": host} if split.scheme == "https" else {}
    try:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                     timeout=None) as client, \
                client.stream("GET", pinned, headers=headers,
                              extensions=extensions) as response:
            if response.status_code != 200:
                raise _refused(param, f"fetching it answered {response.status_code}.")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise InvalidRequestError(
                        f"Invalid '{param}': the image is larger than {max_bytes} bytes.",
                        param=param, code="image_too_large")
            content_type = response.headers.get("content-type", "")
    except httpx.HTTPError as exc:
        raise _refused(param, f"it could not be fetched ({type(exc).__name__}).") from None
    return Upload(filename=split.path.rsplit("/", 1)[-1] or param,
                  content_type=content_type, data=bytes(data))

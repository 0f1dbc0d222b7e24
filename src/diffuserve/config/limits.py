"""Per-key rate limits as configured: a key's limits a minute, and where they are
counted (``--rate-limit-storage``). Counting them, and OpenAI's headers, belong to the
HTTP layer."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """A key's limits a minute; ``None``: no limit."""

    requests_per_minute: int | None = None
    images_per_minute: int | None = None


#: Where per-key rate limits can be counted (``--rate-limit-storage``).
RATE_LIMIT_SCHEMES = ("memory", "redis", "rediss", "redis+sentinel")
_RATE_LIMIT_STORAGE_FORMS = ("memory:// (this process) or redis://HOST:PORT/DB (shared by "
                             "every replica; also rediss:// and "
                             "redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE)")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/@,]+):\d{1,5}")


def check_rate_limit_storage(url: str) -> str:
    """``url`` if it names a storage the limits can use; else a ValueError that never
    repeats the URL, which may hold a password."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in RATE_LIMIT_SCHEMES:
        what = (f"a {scheme}:// URL" if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme)
                else "a value that is not such a URL")
        raise ValueError(f"rate_limit_storage must be {_RATE_LIMIT_STORAGE_FORMS}, not {what}")
    if scheme == "memory":
        if rest:
            raise ValueError("rate_limit_storage memory:// takes nothing after the scheme")
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise ValueError(f"rate_limit_storage is not a valid {scheme}:// URL") from None
    for location in parts.netloc.rpartition("@")[2].split(","):
        if not _HOST_PORT.fullmatch(location):
            raise ValueError(f"rate_limit_storage {scheme}:// needs HOST:PORT (a numeric "
                             "port), comma-separated for several sentinels")
    if scheme == "redis+sentinel":
        if not parts.path.strip("/"):
            raise ValueError("rate_limit_storage redis+sentinel:// needs the service name "
                             "as its path: redis+sentinel://HOST:PORT/SERVICE")
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"rate_limit_storage {scheme}:// takes a database number as its "
                         "path: redis://HOST:PORT/0")
    return url

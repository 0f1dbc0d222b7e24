"""The URLs and origins settings name, checked and made safe to log: browser origins
(``--cors-origins``), the S3 storage URL (``--storage-url``), and the masking of a URL's
secrets (a rate-limit storage's Redis URL may hold a password).

Nothing here connects anywhere: the storage layer imports :func:`parse_storage_url`
from here, so the settings check a URL without importing the store (or boto3).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

#: What ``--storage-url s3://…`` needs beyond the core install.
INSTALL_HINT = 'S3 storage (--storage-url s3://…) needs boto3: pip install "diffuserve[s3]"'

#: S3's rules for bucket names: 3 to 63 lowercase letters, digits, dots and hyphens,
#: a letter or digit at each end (no two dots in a row, not an IP address: checked apart).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: Keys are at most 1024 bytes: a prefix this long still leaves room for the names.
MAX_PREFIX_BYTES = 512


@dataclass(frozen=True)
class S3Location:
    """A bucket, and the prefix its images go under: no slash at either end, may be empty."""

    bucket: str
    prefix: str = ""

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def is_bucket_name(name: str) -> bool:
    if not _BUCKET_RE.match(name) or ".." in name:
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return True
    return False


def parse_storage_url(url: str) -> S3Location:
    """``s3://BUCKET[/PREFIX]``; a :class:`ValueError` that says what is wrong otherwise.

    Slashes around the prefix are dropped (``s3://b//images/`` keeps images under
    ``images/``). Messages never repeat the URL: a mistaken one may hold a secret.
    """
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError("the storage URL must look like s3://BUCKET[/PREFIX]")
    if "@" in parts.netloc:
        raise ValueError("credentials do not belong in the storage URL: set "
                         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    if parts.query or parts.fragment:
        raise ValueError("the storage URL takes no ?query or #fragment")
    if not is_bucket_name(parts.netloc):
        raise ValueError(
            f"{parts.netloc!r} is not a valid S3 bucket name: 3 to 63 lowercase letters, "
            "digits, dots and hyphens, starting and ending with a letter or digit")
    prefix = parts.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError("the storage URL's prefix must not have empty, '.' or '..' parts")
    if len(prefix.encode()) > MAX_PREFIX_BYTES:
        raise ValueError(f"the storage URL's prefix is longer than {MAX_PREFIX_BYTES} bytes")
    return S3Location(parts.netloc, prefix)


def browser_origin(text: str) -> str:
    """``text`` as a browser writes it in ``Origin`` (``scheme://host[:port]``, lower
    case, no trailing slash), or a ValueError that says what an origin is."""
    parts = urllib.parse.urlsplit(text.strip())
    if (not parts.scheme or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or "@" in parts.netloc or "*" in text):
        raise ValueError(f"{text!r} is not an origin: write scheme://host[:port] as the "
                         "browser shows it (http://localhost:3000), with no path and no *")
    return f"{parts.scheme}://{parts.netloc}".lower()


def url_secrets(url: str) -> list[str]:
    """The password of ``url`` and its password-like query values, as written and
    decoded: what must never reach a log line."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return [url]
    userinfo, at, _ = parts.netloc.rpartition("@")
    found = [userinfo.partition(":")[2] or userinfo] if at else []
    found += [value for key, value in urllib.parse.parse_qsl(parts.query)
              if "pass" in key.lower()]
    found += [urllib.parse.unquote(secret) for secret in found]
    return [secret for secret in found if secret]


def mask_url(url: str) -> str:
    """``redis://user:secret@host/0`` → ``redis://user:***@host/0``: what may be logged."""
    if not url_secrets(url):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "***"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    query = "&".join(f"{key}={'***' if 'pass' in key.lower() else value}"
                     for key, value in urllib.parse.parse_qsl(parts.query))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))

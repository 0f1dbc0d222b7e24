"""Signed, expiring image links: ``/v1/images/files/<name>?expires=<unix>&sig=<hmac>``."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlencode

from diffuserve.errors import NotFoundError, PermissionDeniedError

SECRET_FILE = ".signing-key"
FILES_ROUTE = "/v1/images/files"


def load_or_create_secret(storage_dir: Path) -> bytes:
    """The signing key kept beside the images, so links survive a restart.

    Created once with 256 random bits, readable by its owner only.
    """
    storage_dir.mkdir(parents=True, exist_ok=True)
    path = storage_dir / SECRET_FILE
    try:
        secret = path.read_bytes().strip()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    return secret


def _is_ascii_number(text: str) -> bool:
    # str.isdigit() is also true for "²" and other Unicode digits int() refuses.
    return text.isascii() and text.isdigit()


class UrlSigner:
    """HMAC-SHA256 over the file name and its expiry time."""

    def __init__(self, secret: bytes, ttl_seconds: int) -> None:
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def _sig(self, name: str, expires: int) -> str:
        message = f"{name}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def url(self, base_url: str, name: str, now: float) -> str:
        expires = int(now) + self.ttl_seconds
        query = urlencode({"expires": expires, "sig": self._sig(name, expires)})
        return f"{base_url.rstrip('/')}{FILES_ROUTE}/{name}?{query}"

    def verify(self, name: str, expires: str | None, sig: str | None, now: float) -> None:
        """Raise 403 for a link that was not signed here, 404 for one that expired."""
        if not expires or not sig or not _is_ascii_number(expires) or len(expires) > 12:
            raise PermissionDeniedError(
                "This image link is not valid: its signature is missing or malformed.",
                code="invalid_signature",
            )
        if not hmac.compare_digest(self._sig(name, int(expires)), sig):
            raise PermissionDeniedError(
                "This image link is not valid: its signature does not match.",
                code="invalid_signature",
            )
        if int(expires) < now:
            raise NotFoundError(
                "This image link has expired. Links are valid for "
                f"{self.ttl_seconds // 60} minutes after generation.",
                code="expired",
            )

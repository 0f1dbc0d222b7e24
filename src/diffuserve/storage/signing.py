"""HMAC-signed, expiring links for the local store: ``<name>?expires=<unix>&sig=<hmac>``."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from diffuserve.storage.base import LinkExpired, LinkInvalid

SECRET_FILE = ".signing-key"
#: Longest ``expires`` accepted (digits): far beyond any real time, short of abuse.
MAX_EXPIRES_DIGITS = 12
#: Length of a hex SHA-256 signature.
SIG_LENGTH = 64


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

    def sign(self, name: str, now: float) -> tuple[int, str]:
        """``(expires, sig)`` for a link to ``name`` made at ``now``."""
        expires = int(now) + self.ttl_seconds
        return expires, self._sig(name, expires)

    def verify(self, name: str, expires: str | None, sig: str | None, now: float) -> int:
        """The link's expiry time; :class:`LinkInvalid` for a link that was not signed
        here, :class:`LinkExpired` for one whose time is over."""
        if not expires or not sig or not _is_ascii_number(expires) \
                or len(expires) > MAX_EXPIRES_DIGITS or not sig.isascii():
            # compare_digest refuses non-ASCII text: such a signature is simply wrong.
            raise LinkInvalid("its signature is missing or malformed")
        if not hmac.compare_digest(self._sig(name, int(expires)), sig):
            raise LinkInvalid("its signature does not match")
        if int(expires) < now:
            raise LinkExpired(self.ttl_seconds)
        return int(expires)

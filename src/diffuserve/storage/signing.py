"""HMAC-signed, expiring links for the local store: ``<name>?expires=<unix>&sig=<hmac>``."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from diffuserve.storage.base import LinkExpired, LinkInvalid, StorageError
from diffuserve.storage.keyfiles import create_once

SECRET_FILE = ".signing-key"
#: Fewest bytes a key file must hold: 256 bits as the hex a new one is written in is 64.
MIN_SECRET_BYTES = 32
#: Longest ``expires`` accepted (digits): far beyond any real time, short of abuse.
MAX_EXPIRES_DIGITS = 12
#: Length of a hex SHA-256 signature.
SIG_LENGTH = 64

_WHAT_TO_DO = (
    "Every image link given out was signed with it, so it is never replaced on its own: "
    "delete the file to have a new key made (links already given out stop working), or "
    f"put a key of at least {MIN_SECRET_BYTES} bytes in it (for example the output of "
    "`python -c 'import secrets; print(secrets.token_hex(32))'`), or set "
    "DIFFUSERVE_SIGNING_SECRET.")


class SigningKeyUnusable(StorageError):
    """The signing key file exists but cannot serve as the key: too short, or unreadable.

    It is never replaced on its own, since every link given out was signed with it;
    ``reason`` (one paragraph) names the file and what the operator can do.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_or_create_secret(storage_dir: Path) -> bytes:
    """The signing key kept beside the images, so links survive a restart.

    Created once with 256 random bits, readable by its owner only. Processes that start
    at once agree on one key: each writes its own into a private temporary file and
    hard-links it into place, which fails once the key exists; the first link wins and
    every process then reads that one. A key file that exists but is too short or
    unreadable raises :class:`SigningKeyUnusable` rather than being replaced.
    """
    storage_dir.mkdir(parents=True, exist_ok=True)
    path = storage_dir / SECRET_FILE
    secret = _read_secret(path)
    if secret is None:
        _create_secret(path)
        secret = _read_secret(path)
        if secret is None:
            raise SigningKeyUnusable(
                f"the signing key file {path} disappeared while it was being created; "
                "check what else deletes files in the storage folder, then start again.")
    return secret


def _read_secret(path: Path) -> bytes | None:
    """The key in ``path``; None when there is no such file."""
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SigningKeyUnusable(
            f"the signing key file {path} cannot be read ({exc.strerror or exc}). "
            f"Give the server's user read access to it. {_WHAT_TO_DO}") from None
    if len(secret) < MIN_SECRET_BYTES:
        held = "is empty" if not secret else f"holds only {len(secret)} bytes"
        raise SigningKeyUnusable(
            f"the signing key file {path} {held}, fewer than the {MIN_SECRET_BYTES} a key "
            f"needs. {_WHAT_TO_DO}")
    return secret


def _create_secret(path: Path) -> None:
    """Put a new key at ``path`` unless another process already has; never overwrite."""
    create_once(path, secrets.token_hex(32).encode())


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

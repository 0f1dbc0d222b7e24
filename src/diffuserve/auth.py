"""API keys: kept only as SHA-256 digests and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from diffuserve.errors import AuthenticationError

NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
HASH_PREFIX = "sha256:"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def mask_key(key: str) -> str:
    """``sk-abcdef…xyz`` → ``sk-ab***yz``, as OpenAI shows a wrong key."""
    if len(key) < 10:
        return "***"
    return f"{key[:5]}***{key[-2:]}"


def read_keys_file(path: Path) -> list[str]:
    """One key per line: the key itself or ``sha256:<hex digest>``; ``#`` starts a comment.

    Text after the key on a line (a name for the key) is ignored.
    """
    entries = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            entries.append(line.split()[0])
    return entries


class KeyStore:
    """The set of accepted keys. Empty means the server accepts any request."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        digests: list[bytes] = []
        for entry in entries:
            if entry.startswith(HASH_PREFIX):
                digest = bytes.fromhex(entry[len(HASH_PREFIX):])
                if len(digest) != 32:
                    raise ValueError("a sha256: key entry must hold 64 hex digits")
                digests.append(digest)
            elif entry:
                digests.append(hash_key(entry))
        self._digests = tuple(digests)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, authorization: str | None) -> None:
        """Accept the request or raise OpenAI's 401."""
        if not self.enabled:
            return
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError(NO_KEY_MESSAGE)
        presented = hash_key(token)
        # Compare against every key, so the time taken says nothing about which matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            raise AuthenticationError(
                f"Incorrect API key provided: {mask_key(token)}. Ask the operator of this "
                "diffuserve server for a valid key.",
                code="invalid_api_key",
            )

"""API keys: kept only as SHA-256 digests, compared in constant time, with their limits."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from diffuserve.api.errors import AuthenticationError
from diffuserve.api.ratelimit import Limits

NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
HASH_PREFIX = "sha256:"
ANONYMOUS = "anonymous"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def mask_key(key: str) -> str:
    """``sk-abcdef…xyz`` → ``sk-ab***yz``, as OpenAI shows a wrong key."""
    if len(key) < 10:
        return "***"
    return f"{key[:5]}***{key[-2:]}"


@dataclass(frozen=True)
class KeyEntry:
    """One line of a keys file: the key (or ``sha256:<hex>``), a name, its limits."""

    key: str
    name: str | None = None
    limits: Limits | None = None


@dataclass(frozen=True)
class Client:
    """Who sent a request: an id for queues and buckets, a name for messages and logs."""

    id: str
    name: str
    limits: Limits


def _parse_limit(option: str, value: str, path: Path, number: int) -> int:
    if not value.isdigit():
        raise ValueError(f"{path}:{number}: {option} must be a whole number, not {value!r}")
    return int(value)


def read_keys_file(path: Path) -> list[KeyEntry]:
    """One key per line: ``KEY [NAME] [rpm=N] [ipm=N]``; ``#`` starts a comment.

    ``KEY`` is the key itself or ``sha256:<hex digest>`` of it; ``rpm``/``ipm`` are the
    key's requests and images per minute (0: unlimited), overriding the defaults.
    """
    entries = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, *rest = line.split()
        names: list[str] = []
        options: dict[str, int] = {}
        for word in rest:
            option, sep, value = word.partition("=")
            if sep and option in ("rpm", "ipm"):
                options[option] = _parse_limit(option, value, path, number)
            else:
                names.append(word)
        limits = None
        if options:
            limits = Limits(requests_per_minute=options.get("rpm"),
                            images_per_minute=options.get("ipm"))
        entries.append(KeyEntry(key, " ".join(names) or None, limits))
    return entries


@dataclass(frozen=True)
class _Stored:
    digest: bytes
    name: str | None
    limits: Limits | None


class KeyStore:
    """The accepted keys. Empty means the server accepts any request."""

    def __init__(self, entries: Iterable[str | KeyEntry] = (),
                 default_limits: Limits | None = None) -> None:
        self.default_limits = default_limits or Limits()
        stored: list[_Stored] = []
        for item in entries:
            entry = item if isinstance(item, KeyEntry) else KeyEntry(item)
            if entry.key.startswith(HASH_PREFIX):
                digest = bytes.fromhex(entry.key[len(HASH_PREFIX):])
                if len(digest) != 32:
                    raise ValueError("a sha256: key entry must hold 64 hex digits")
            elif entry.key:
                digest = hash_key(entry.key)
            else:
                continue
            stored.append(_Stored(digest, entry.name, entry.limits))
        self._keys = tuple(stored)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, authorization: str | None) -> Client:
        """Identify the sender or raise OpenAI's 401."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not self.enabled:
            # Open server: tell clients apart by what they send, for fairness and limits.
            client_id = hash_key(token).hex()[:16] if token else ANONYMOUS
            return Client(client_id, mask_key(token) if token else ANONYMOUS,
                          self.default_limits)
        if not token:
            raise AuthenticationError(NO_KEY_MESSAGE)
        presented = hash_key(token)
        # Compare against every key, so the time taken says nothing about which matched.
        found: _Stored | None = None
        for stored in self._keys:
            if hmac.compare_digest(presented, stored.digest):
                found = stored
        if found is None:
            raise AuthenticationError(
                f"Incorrect API key provided: {mask_key(token)}. Ask the operator of this "
                "diffuserve server for a valid key.",
                code="invalid_api_key",
            )
        limits = self.default_limits
        if found.limits is not None:
            limits = Limits(
                requests_per_minute=_first(found.limits.requests_per_minute,
                                           limits.requests_per_minute),
                images_per_minute=_first(found.limits.images_per_minute,
                                         limits.images_per_minute),
            )
        return Client(found.digest.hex()[:16], found.name or mask_key(token), limits)


def _first(value: int | None, default: int | None) -> int | None:
    return default if value is None else value

"""API keys as configured: ``--api-key`` flags and the keys file, each kept only as its
SHA-256 digest and found in constant time. Reading a request's key, and the 401 of a
wrong one, belong to the HTTP layer; the Ray deployment hands its replicas the digests
made here, never the keys."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffuserve.config.limits import Limits

if TYPE_CHECKING:
    from diffuserve.config.settings import Settings

#: A keys-file entry that holds the digest of a key, not the key: ``sha256:<hex>``.
HASH_PREFIX = "sha256:"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def mask_key(key: str) -> str:
    """``sk-abcdef…xyz`` → ``sk-ab***yz``, as OpenAI shows a wrong key."""
    if len(key) < 10:
        return "***"
    return f"{key[:5]}***{key[-2:]}"


#: What a key may do: ``user`` the Images API; ``admin`` also load and unload models.
ROLES = ("user", "admin")


@dataclass(frozen=True)
class KeyEntry:
    """One line of a keys file: the key (or ``sha256:<hex>``), a name, its limits and
    role."""

    key: str
    name: str | None = None
    limits: Limits | None = None
    role: str = "user"


@dataclass(frozen=True)
class StoredKey:
    """A key as the server keeps it: its digest (never the key), name, limits and
    role."""

    digest: bytes
    name: str | None
    limits: Limits | None
    role: str = "user"

    @classmethod
    def of(cls, entry: KeyEntry) -> StoredKey | None:
        """``entry``'s digest (the key hashed, or its ``sha256:`` hex); None for an empty
        key."""
        if entry.key.startswith(HASH_PREFIX):
            digest = bytes.fromhex(entry.key[len(HASH_PREFIX):])
            if len(digest) != 32:
                raise ValueError("a sha256: key entry must hold 64 hex digits")
        elif entry.key:
            digest = hash_key(entry.key)
        else:
            return None
        return cls(digest, entry.name, entry.limits, entry.role)


def find_key(presented: bytes, keys: Iterable[StoredKey]) -> StoredKey | None:
    """The stored key whose digest is ``presented``, or None."""
    # Compare against every key, so the time taken says nothing about which matched.
    found: StoredKey | None = None
    for stored in keys:
        if hmac.compare_digest(presented, stored.digest):
            found = stored
    return found


def _parse_limit(option: str, value: str, path: Path, number: int) -> int:
    if not value.isdigit():
        raise ValueError(f"{path}:{number}: {option} must be a whole number, not {value!r}")
    return int(value)


def read_keys_file(path: Path) -> list[KeyEntry]:
    """One key per line: ``KEY [NAME] [rpm=N] [ipm=N] [role=admin]``; ``#`` starts a
    comment.

    ``KEY`` is the key itself or ``sha256:<hex digest>`` of it; ``rpm``/``ipm`` are the
    key's requests and images per minute (0: unlimited), overriding the defaults;
    ``role`` is ``user`` (the default) or ``admin`` (may also load and unload models).
    """
    entries = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, *rest = line.split()
        names: list[str] = []
        options: dict[str, int] = {}
        role = "user"
        for word in rest:
            option, sep, value = word.partition("=")
            if sep and option in ("rpm", "ipm"):
                options[option] = _parse_limit(option, value, path, number)
            elif sep and option == "role":
                if value not in ROLES:
                    raise ValueError(f"{path}:{number}: role must be one of "
                                     f"{', '.join(ROLES)}, not {value!r}")
                role = value
            else:
                names.append(word)
        limits = None
        if options:
            limits = Limits(requests_per_minute=options.get("rpm"),
                            images_per_minute=options.get("ipm"))
        entries.append(KeyEntry(key, " ".join(names) or None, limits, role))
    return entries


def key_entries(settings: Settings) -> list[KeyEntry]:
    """The configured keys: ``--api-key`` flags, then the keys file's lines."""
    entries = [KeyEntry(key.get_secret_value()) for key in settings.api_keys]
    if settings.api_keys_file is not None:
        entries += read_keys_file(settings.api_keys_file)
    return entries

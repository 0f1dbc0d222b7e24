"""Who sent a request: its bearer key checked against the configured keys (kept only as
SHA-256 digests, compared in constant time: :mod:`diffuserve.config.keys`), or OpenAI's
401."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from diffuserve.api.errors import AuthenticationError
from diffuserve.config.keys import KeyEntry as KeyEntry
from diffuserve.config.keys import StoredKey, find_key, hash_key
from diffuserve.config.keys import mask_key as mask_key
from diffuserve.config.keys import read_keys_file as read_keys_file
from diffuserve.config.limits import Limits

NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Client:
    """Who sent a request: an id for queues and buckets, a name for messages and logs."""

    id: str
    name: str
    limits: Limits
    #: May load and unload models (``role=admin`` in the keys file; anyone on a server
    #: without keys).
    admin: bool = False


class KeyStore:
    """The accepted keys. Empty means the server accepts any request."""

    def __init__(self, entries: Iterable[str | KeyEntry] = (),
                 default_limits: Limits | None = None) -> None:
        self.default_limits = default_limits or Limits()
        stored = (StoredKey.of(item if isinstance(item, KeyEntry) else KeyEntry(item))
                  for item in entries)
        self._keys = tuple(key for key in stored if key is not None)

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
                          self.default_limits, admin=True)
        if not token:
            raise AuthenticationError(NO_KEY_MESSAGE)
        found = find_key(hash_key(token), self._keys)
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
        return Client(found.digest.hex()[:16], found.name or mask_key(token), limits,
                      admin=found.role == "admin")


def _first(value: int | None, default: int | None) -> int | None:
    return default if value is None else value

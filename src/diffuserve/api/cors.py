"""Cross-origin requests from the browser apps of the configured origins (``--cors-origins``).

Starlette's :class:`~starlette.middleware.cors.CORSMiddleware` answers the preflights and
marks the answers, but only for a request whose ``Origin`` is one of the configured
origins: it would otherwise still add ``Access-Control-Expose-Headers`` to every answer and
refuse another origin's preflight with its allowed methods and headers. Requests from
any other origin go on as if no CORS were configured (a preflight gets the router's 405);
the browser then refuses to let the page read the answer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

#: The headers a browser app may send: the key and the body's type, and what openai-node
#: adds from a browser (``buildHeaders`` and ``getPlatformHeaders`` of 7.60) so that
#: ``new OpenAI({dangerouslyAllowBrowser: true})`` passes its preflight.
ALLOWED_HEADERS = (
    "Authorization", "Content-Type",
    "OpenAI-Organization", "OpenAI-Project",
    "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS",
    "X-Stainless-Arch", "X-Stainless-Runtime", "X-Stainless-Runtime-Version",
    "X-Stainless-Retry-Count", "X-Stainless-Timeout", "X-Stainless-Helper-Method",
)
#: The answer's headers a page may read: the request id and the rate-limit state.
EXPOSED_HEADERS = (
    "x-request-id", "Retry-After",
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests", "x-ratelimit-limit-images",
    "x-ratelimit-remaining-images", "x-ratelimit-reset-images",
)
ALLOWED_METHODS = ("GET", "HEAD", "POST")
#: How long a browser may keep a preflight's answer (seconds).
PREFLIGHT_MAX_AGE = 600


def answer_headers(origins: Collection[str], scope: Scope) -> list[tuple[bytes, bytes]]:
    """What :class:`CorsForOrigins` puts on an answer to ``scope``, for the answers sent
    outside it (the request-id middleware's own: a body over the limit, a bug's 500)."""
    origin = Headers(scope=scope).get("origin")
    if origin is None or origin not in origins:
        return []
    return [(b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", ", ".join(EXPOSED_HEADERS).encode()),
            (b"vary", b"Origin")]


class CorsForOrigins:
    """CORS for ``origins`` only (exact ``scheme://host[:port]``); no ``*``: keys are
    bearer tokens, and an operator names the apps that may use them."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.cors = CORSMiddleware(
            app, allow_origins=tuple(self.origins), allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and Headers(scope=scope).get("origin") in self.origins:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)

"""The web playground: its page at ``/``, its files under ``/playground/``, and the rule
tables it builds its pickers from at ``/playground/rules.json``.

No key is needed for any of these: they hold nothing but the page and OpenAI's public
rules (and whether the server wants a key, which a 401 would tell anyway, and what the
built-in model draws, the same on every server). The page
asks for the key itself and sends it only as a Bearer header to the API.

Every answer carries a Content-Security-Policy that allows nothing from another origin
and no inline script or style; the page asks for ``b64_json`` images so that ``data:``
and ``blob:`` images of its own are all it shows. The files are a fixed list read once
from the package (no directory listing, no path from the request reaches the disk),
served with their content type, an ETag and ``Cache-Control: no-cache`` (revalidated on
every load, so an upgraded server is never paired with a stale script).

``/playground/adapters.json?model=NAME`` says which LoRA adapters a request for ``NAME``
may name (with their default scales) and which its model applies of its own. It is not
a public rule but this server's own, so it wants the key, as ``/v1/models`` does; it is
asked again whenever the page needs it, because an adapters folder changes while the
server runs. Names and scales only: never where the weights are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from diffuserve import builtin
from diffuserve.api.deps import authenticate, parts
from diffuserve.api.errors import NotFoundError
from diffuserve.config.adapters import (
    MAX_ADAPTER_SCALE,
    MAX_ADAPTERS_PER_REQUEST,
    MIN_ADAPTER_SCALE,
)
from diffuserve.protocol.rule_tables import rules_document
from diffuserve.service.adapters import AdapterOffer, adapter_offers

PREFIX = "/playground"

#: The only files served, with their content types.
WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "adapters.js": "text/javascript; charset=utf-8",
    "pickers.js": "text/javascript; charset=utf-8",
    "painter.js": "text/javascript; charset=utf-8",
    "history.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class WebFile:
    body: bytes
    content_type: str
    etag: str


def static_file(body: bytes, content_type: str) -> WebFile:
    """``body`` served as a static file of this package, with its ETag."""
    return WebFile(body, content_type, _etag(body))


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def load_web_files() -> dict[str, WebFile]:
    """The playground's files, read once from the package."""
    root = resources.files("diffuserve") / "web"
    files = {}
    for name, content_type in WEB_FILES.items():
        body = (root / name).read_bytes()
        files[name] = WebFile(body, content_type, _etag(body))
    return files


def answer_file(request: Request, file: WebFile) -> Response:
    """``file`` with the security headers and an ETag (revalidated on every load)."""
    headers = {**SECURITY_HEADERS, "ETag": file.etag}
    match = request.headers.get("if-none-match", "")
    if file.etag in (tag.strip() for tag in match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.content_type, headers=headers)


def router_for(files: dict[str, WebFile]) -> APIRouter:
    """The page's routes over ``files`` (see :func:`load_web_files`)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def page(request: Request) -> Response:
        return answer_file(request, files["index.html"])

    @router.get(PREFIX + "/rules.json")
    async def rules(request: Request) -> Response:
        document = {**rules_document(), "keys_required": parts(request).keys.enabled,
                    "builtin": builtin.playground_note()}
        body = json.dumps(document).encode()
        return answer_file(request, WebFile(body, "application/json", _etag(body)))

    # A plain function: FastAPI runs it on a worker thread, as reading the adapters
    # folders must not block the event loop.
    @router.get(PREFIX + "/adapters.json", dependencies=[Depends(authenticate)])
    def adapters(request: Request, model: str | None = None) -> Response:
        catalog = parts(request).service.catalog
        offers = adapter_offers(catalog, model)
        document = {
            "model": catalog.requested_name(model),
            "max_adapters": MAX_ADAPTERS_PER_REQUEST,
            "min_scale": MIN_ADAPTER_SCALE, "max_scale": MAX_ADAPTER_SCALE,
            **{route: _offer_document(offer) for route, offer in offers.items()},
        }
        # Per key and changing while the server runs: never kept by a cache.
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return Response(json.dumps(document).encode(), media_type="application/json",
                        headers=headers)

    @router.get(PREFIX + "/{name}")
    async def web_file(name: str, request: Request) -> Response:
        file = files.get(name)
        if file is None or name == "index.html":
            raise NotFoundError(f"Unknown playground file: {name!r}.", code="not_found")
        return answer_file(request, file)

    return router


def _offer_document(offer: AdapterOffer) -> dict[str, object]:
    return {
        "model": offer.model,
        "adapters": [{"name": name, "scale": scale} for name, scale in offer.adapters],
        "applied": [{"name": name, "scale": scale} for name, scale in offer.applied],
    }

"""Swagger UI at ``/docs``, served from this server alone.

Swagger UI's files come from the ``fastapi-offline`` package (which ships its dist
files), read once, and are served under ``/docs/`` with the playground's
Content-Security-Policy: nothing from another origin, no inline script or style. The
page's one line of setup is a script file of our own (``/docs/swagger-init.js``), so
``script-src 'self'`` holds; the online validator, which would send the schema
elsewhere, is off. The files are public (they hold nothing of this server); the page
itself and the schema it loads stay behind the API keys.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from diffuserve.api.errors import NotFoundError
from diffuserve.api.routes.playground import WebFile, answer_file, static_file

PREFIX = "/docs"

#: The files of fastapi-offline's ``static`` folder that the page uses.
PACKAGED_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}

INIT_SCRIPT = b"""\
"use strict";
// Swagger UI over this server's schema (relative: the page may sit behind a prefix).
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // The online validator would send the schema to another origin.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""

PAGE = b"""\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>diffuserve API</title>
  <link rel="icon" href="docs/favicon.png" type="image/png">
  <link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/swagger-init.js"></script>
</body>
</html>
"""


def load_assets() -> dict[str, WebFile]:
    """Swagger UI's files and our setup script, read once."""
    root = resources.files("fastapi_offline") / "static"
    assets = {name: static_file((root / name).read_bytes(), content_type)
              for name, content_type in PACKAGED_FILES.items()}
    assets["swagger-init.js"] = static_file(INIT_SCRIPT, "text/javascript; charset=utf-8")
    return assets


PAGE_ASSET = static_file(PAGE, "text/html; charset=utf-8")


def assets_router(assets: dict[str, WebFile]) -> APIRouter:
    """The public files under ``/docs/`` (a fixed list: no path reaches the disk)."""
    router = APIRouter(include_in_schema=False)

    @router.get(PREFIX + "/{name}")
    async def docs_file(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFoundError(f"Unknown docs file: {name!r}.", code="not_found")
        return answer_file(request, asset)

    return router

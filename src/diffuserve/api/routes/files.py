"""The signed image links of the local store; the signature is the credential.

Routed only when images are kept in the local store: an S3 store's links are presigned
URLs of its bucket, and this server has nothing to serve for them.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from diffuserve.storage.local import LocalImageStore

#: Where the local store's links point.
FILES_ROUTE = "/v1/images/files"


def router_for(store: LocalImageStore) -> APIRouter:
    """The route that serves ``store``'s links."""
    router = APIRouter()

    @router.get(FILES_ROUTE + "/{name}", response_class=FileResponse,
                responses={200: {"content": {"image/png": {}, "image/jpeg": {},
                                             "image/webp": {}}}})
    # HEAD too: caches and link checkers ask before they fetch.
    @router.head(FILES_ROUTE + "/{name}", response_class=FileResponse,
                 include_in_schema=False)
    async def image_file(
        name: str,
        expires: Annotated[str | None, Query(max_length=20,
                                             description="unix time the link expires")] = None,
        sig: Annotated[str | None, Query(max_length=128, description="HMAC-SHA256 of the "
                                                                      "name and expiry")] = None,
    ) -> FileResponse:
        """Serve a generated image to whoever holds its signed link; no API key needed."""
        now = time.time()
        stored = store.open(name, expires, sig, now)
        return FileResponse(
            stored.path,
            media_type=stored.content_type,
            headers={"Cache-Control": f"private, max-age={max(0, stored.expires - int(now))}"},
        )

    return router

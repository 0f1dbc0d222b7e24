"""The signed image links of the local store; the signature is the credential.

Routed only when images are kept in the local store: an S3 store's links are presigned
URLs of its bucket, and this server has nothing to serve for them.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from diffuserve.api.errors import BadRequestError, RangeNotSatisfiableError
from diffuserve.storage.local import LocalImageStore

#: Where the local store's links point.
FILES_ROUTE = "/v1/images/files"


class ImageFileResponse(FileResponse):
    """Starlette's file response, whose Range errors are OpenAI's envelope.

    Starlette parses ``Range`` itself (only for GET and HEAD, and only when ``If-Range``
    still matches) and answers a malformed one with a plain-text 400 and one beyond the
    file with a bare 416. Its parser is kept, so valid ranges and those conditions work
    as they do upstream; its two errors are raised as :class:`APIError` instead, before
    anything is sent, and the error handlers answer them like every other error.
    """

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            raise BadRequestError(
                "The Range header is not a valid byte range. Ask for bytes=FIRST-LAST, "
                "bytes=FIRST- or bytes=-LENGTH, or leave it out for the whole image.",
                code="invalid_range") from None
        except RangeNotSatisfiable as exc:
            raise RangeNotSatisfiableError(
                f"The Range header asks for bytes beyond the image's {exc.max_size} bytes.",
                code="range_not_satisfiable",
                headers={"Content-Range": f"bytes */{exc.max_size}"}) from None


def router_for(store: LocalImageStore) -> APIRouter:
    """The route that serves ``store``'s links."""
    router = APIRouter()

    @router.get(FILES_ROUTE + "/{name}", response_class=ImageFileResponse,
                responses={200: {"content": {"image/png": {}, "image/jpeg": {},
                                             "image/webp": {}}}})
    # HEAD too: caches and link checkers ask before they fetch.
    @router.head(FILES_ROUTE + "/{name}", response_class=ImageFileResponse,
                 include_in_schema=False)
    async def image_file(
        name: str,
        expires: Annotated[str | None, Query(max_length=20,
                                             description="unix time the link expires")] = None,
        sig: Annotated[str | None, Query(max_length=128, description="HMAC-SHA256 of the "
                                                                      "name and expiry")] = None,
    ) -> ImageFileResponse:
        """Serve a generated image to whoever holds its signed link; no API key needed."""
        now = time.time()
        stored = store.open(name, expires, sig, now)
        return ImageFileResponse(
            stored.path,
            media_type=stored.content_type,
            headers={"Cache-Control": f"private, max-age={max(0, stored.expires - int(now))}"},
        )

    return router

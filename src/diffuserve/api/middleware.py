"""ASGI middleware: request ids, access log, the request body limit, and the answer to a
bug (500 with the request's id, one traceback in the log, the connection kept)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffuserve.api.errors import (
    ERROR_STATE,
    APIError,
    InternalServerError,
    RequestTooLargeError,
    note_error,
)

logger = logging.getLogger("diffuserve.access")
errors_logger = logging.getLogger("diffuserve.api")


class RequestContextMiddleware:
    """Gives every request an id (echoed as ``x-request-id``) and logs one line for it,
    with the error it was answered (type, code, param, message) where there was one.

    Bodies larger than ``max_body_bytes`` are refused with 413 before they are read,
    from ``Content-Length`` when given, else while streaming.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 upload_paths: tuple[str, ...] = (), max_upload_bytes: int = 0,
                 answer_headers: Callable[[Scope], list[tuple[bytes, bytes]]] | None = None,
                 ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.upload_paths = upload_paths
        self.max_upload_bytes = max(max_upload_bytes, max_body_bytes)
        #: Headers of the answers this middleware sends itself, which no inner
        #: middleware sees (CORS: a browser page may read them too).
        self.answer_headers = answer_headers or (lambda scope: [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        # Routes that carry images take larger bodies.
        limit = (self.max_upload_bytes if scope.get("path") in self.upload_paths
                 else self.max_body_bytes)

        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > limit:
            note_error(state, await _send_too_large(send_with_id, limit,
                                                    self.answer_headers(scope)))
            status = 413
        else:
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        # FastAPI passes HTTPException through body parsing untouched.
                        raise HTTPException(413, _too_large_message(limit))
                return message

            try:
                await self.app(scope, limited_receive, send_with_id)
            except Exception:
                if started_response:
                    raise  # half an answer: the HTTP server logs it and closes
                # A bug, answered here (not by Starlette's outermost handler, which would
                # answer without this request's id, then raise again for the HTTP server
                # to log a second traceback and drop the connection).
                errors_logger.error("unhandled error", exc_info=True,
                             extra={"fields": {"request_id": request_id}})
                status = 500
                error = InternalServerError()
                note_error(state, error)
                await _send_error(send_with_id, error, extra=self.answer_headers(scope))

        logger.info(
            "request",
            extra={
                "fields": {
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    **(state.get(ERROR_STATE, {}) if status >= 400 else {}),
                }
            },
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large_message(limit: int) -> str:
    return f"The request body is too large: the limit is {limit} bytes."


async def _send_too_large(send: Send, limit: int,
                          extra: Sequence[tuple[bytes, bytes]]) -> APIError:
    # The body is not read: the connection cannot carry another request.
    error = RequestTooLargeError(_too_large_message(limit), code="request_too_large")
    await _send_error(send, error, close=True, extra=extra)
    return error


async def _send_error(send: Send, error: APIError, *, close: bool = False,
                      extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error.envelope()).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": headers})
    await send({"type": "http.response.body", "body": body})

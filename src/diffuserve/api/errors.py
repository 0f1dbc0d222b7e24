"""The one place where exceptions become HTTP statuses and OpenAI's error envelope."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from diffuserve.errors import (
    APIError,
    ClientClosedRequest,
    InternalServerError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
)
from diffuserve.protocol import translate_validation_errors

logger = logging.getLogger("diffuserve.api")


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.status_code, headers=error.headers)


def _from_http_exception(exc: StarletteHTTPException, request: Request) -> APIError:
    if exc.status_code == 404:
        return NotFoundError(
            f"Invalid URL ({request.method} {request.url.path})", code="unknown_url"
        )
    if exc.status_code == 405:
        return MethodNotAllowedError(
            f"Method {request.method} is not allowed for {request.url.path}.",
            code="method_not_allowed",
            headers=dict(exc.headers or {}),
        )
    if exc.status_code == 413:
        return RequestTooLargeError(str(exc.detail), code="request_too_large")
    if exc.status_code >= 500:
        return InternalServerError()
    error = APIError(str(exc.detail), headers=dict(exc.headers or {}))
    error.status_code = exc.status_code
    error.error_type = "invalid_request_error"
    return error


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(translate_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(_from_http_exception(exc, request))

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client went away while sending its body: nobody reads this answer.
        return error_response(ClientClosedRequest("The client closed the connection."))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error(
            "unhandled error",
            exc_info=exc,
            extra={"fields": {"request_id": getattr(request.state, "request_id", None)}},
        )
        return error_response(InternalServerError())

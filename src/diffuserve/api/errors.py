"""The one place where exceptions become HTTP statuses and OpenAI's error envelope.

Errors born in the HTTP layer (a missing key, a rate limit, an unknown route) are
:class:`APIError` subclasses with their status. Every other layer raises its own errors
(protocol, engine, storage), free of HTTP; :data:`ERROR_TABLE` maps each to what a
client sees. A client's mistake is never a 5xx (the SDK would retry it), and a
deterministic failure never asks to be retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from diffuserve.engine import errors as engine
from diffuserve.protocol.common import translate_validation_errors
from diffuserve.protocol.edits import too_many_images
from diffuserve.protocol.errors import ClientError, ModelNotFoundError
from diffuserve.protocol.rules import prompt_too_long
from diffuserve.storage import base as storage

logger = logging.getLogger("diffuserve.api")

SERVER_ERROR_MESSAGE = (
    "The server had an error while processing your request. Sorry about that!"
)


class APIError(Exception):
    """An error with an HTTP status and OpenAI's four envelope fields."""

    status_code: int = 500
    error_type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequestError(APIError):
    """400: the request itself is wrong; retrying it unchanged cannot help."""

    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(APIError):
    status_code = 401
    error_type = "invalid_request_error"


class PermissionDeniedError(APIError):
    status_code = 403
    error_type = "invalid_request_error"


class NotFoundError(APIError):
    status_code = 404
    error_type = "invalid_request_error"


class MethodNotAllowedError(APIError):
    status_code = 405
    error_type = "invalid_request_error"


class RequestTimeoutError(APIError):
    """408: the request's deadline passed while its images were being drawn."""

    status_code = 408
    error_type = "timeout_error"


class ClientClosedRequest(APIError):
    """499 (nginx's code): the client went away; nobody reads this answer."""

    status_code = 499
    error_type = "client_closed_request"


class RequestTooLargeError(APIError):
    status_code = 413
    error_type = "invalid_request_error"


class RangeNotSatisfiableError(APIError):
    """416: a Range header asks for bytes the file does not have; ``Content-Range``
    (``bytes */SIZE``) tells the client how many it does."""

    status_code = 416
    error_type = "invalid_request_error"


class RateLimitError(APIError):
    status_code = 429
    error_type = "requests"


class InternalServerError(APIError):
    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str = SERVER_ERROR_MESSAGE, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class ServiceUnavailableError(APIError):
    status_code = 503
    error_type = "server_error"


# -- the table ------------------------------------------------------------------------

E = TypeVar("E", bound=Exception)
_Rule = tuple[type[Exception], Callable[[Any], APIError]]
ERROR_TABLE: list[_Rule] = []


def _maps(kind: type[E]) -> Callable[[Callable[[E], APIError]], Callable[[E], APIError]]:
    def register(build: Callable[[E], APIError]) -> Callable[[E], APIError]:
        ERROR_TABLE.append((kind, build))
        return build
    return register


def _retry(seconds: int) -> dict[str, str]:
    return {"Retry-After": str(seconds)}


def _duration(seconds: int) -> str:
    """``3600`` → "60 minutes", ``45`` → "45 seconds", ``90`` → "90 seconds"."""
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


@_maps(ModelNotFoundError)
def _model_not_found(error: ModelNotFoundError) -> APIError:
    return NotFoundError(error.message, param=error.param, code=error.code)


@_maps(ClientError)  # InvalidRequestError and any other client error
def _client_error(error: ClientError) -> APIError:
    return BadRequestError(error.message, param=error.param, code=error.code)


@_maps(engine.QueueFull)
def _queue_full(error: engine.QueueFull) -> APIError:
    return RateLimitError(
        f"The server is busy: the queue of model {error.model!r} is full "
        f"({error.limit} requests). Please try again in {error.retry_after}s.",
        code="rate_limit_exceeded", headers=_retry(error.retry_after))


@_maps(engine.Draining)
def _draining(error: engine.Draining) -> APIError:
    return ServiceUnavailableError("The server is shutting down. Please retry your request.",
                                   headers=_retry(error.retry_after))


@_maps(engine.WorkerLost)
def _worker_lost(error: engine.WorkerLost) -> APIError:
    return ServiceUnavailableError(
        "The worker drawing your images went away before it finished. Please retry your "
        "request.", headers=_retry(error.retry_after))


@_maps(engine.ModelNotLoaded)
def _not_loaded(error: engine.ModelNotLoaded) -> APIError:
    return ServiceUnavailableError("The model is still loading. Try again shortly.",
                                   headers=_retry(error.retry_after))


@_maps(engine.DeadlineExceeded)
def _deadline(error: engine.DeadlineExceeded) -> APIError:
    timeout = f"{error.timeout_seconds:.3g}"
    if not error.started:  # never got its turn: the server is overloaded
        return RateLimitError(
            f"The request waited {timeout}s without its turn coming: the server is "
            f"overloaded. Please try again in {error.retry_after}s.",
            code="rate_limit_exceeded", headers=_retry(error.retry_after))
    return RequestTimeoutError(
        f"The images were not finished within the server's deadline of {timeout}s. Ask "
        "for fewer or smaller images or fewer steps.",
        code="timeout",
        # The same work would take as long again: tell the SDK not to resend it.
        headers={"x-should-retry": "false"})


@_maps(engine.Cancelled)
def _cancelled(error: engine.Cancelled) -> APIError:
    return ServiceUnavailableError("The request was cancelled before it finished.",
                                   headers=_retry(1))


@_maps(engine.ContentFlagged)
def _flagged(error: engine.ContentFlagged) -> APIError:
    return BadRequestError(
        "Your request was rejected as a result of our safety system. "
        "Your prompt may contain text that is not allowed by our safety system.",
        code="content_policy_violation")


@_maps(engine.UnsupportedTask)
def _unsupported(error: engine.UnsupportedTask) -> APIError:
    return BadRequestError(f"The model {error.model!r} does not support {error.kind}.",
                           param=error.field or "model",
                           code="unsupported_value")


@_maps(engine.TooManyImages)
def _too_many_images(error: engine.TooManyImages) -> APIError:
    return _client_error(too_many_images(error.model, error.limit, error.given))


@_maps(engine.PromptTooLong)
def _prompt_too_long(error: engine.PromptTooLong) -> APIError:
    return _client_error(prompt_too_long(error.model, error.limit, error.given))


@_maps(engine.ResidencyRefused)
def _residency_refused(error: engine.ResidencyRefused) -> APIError:
    return BadRequestError(f"The model {error.model!r} cannot be loaded or unloaded on "
                           f"request: {error.reason}.", param="model",
                           code="unsupported_value")


@_maps(engine.ModelLoadFailed)
def _load_failed(error: engine.ModelLoadFailed) -> APIError:
    return ServiceUnavailableError("The model could not be loaded.", headers=_retry(30))


@_maps(engine.EngineError)  # out of memory, a failed pipeline, an unknown model
def _engine_failure(error: engine.EngineError) -> APIError:
    # Details stay in the log; the same request would fail the same way.
    return InternalServerError(headers={"x-should-retry": "false"})


@_maps(storage.LinkInvalid)
def _link_invalid(error: storage.LinkInvalid) -> APIError:
    return PermissionDeniedError(f"This image link is not valid: {error.reason}.",
                                 code="invalid_signature")


@_maps(storage.LinkExpired)
def _link_expired(error: storage.LinkExpired) -> APIError:
    return NotFoundError(
        "This image link has expired. Links are valid for "
        f"{_duration(error.ttl_seconds)} after generation.", code="expired")


@_maps(storage.ImageGone)
def _image_gone(error: storage.ImageGone) -> APIError:
    return NotFoundError("This image no longer exists.", code="image_not_found")


@_maps(storage.StorageUnavailable)
def _storage_unavailable(error: storage.StorageUnavailable) -> APIError:
    # The object store's trouble, not the request's: worth retrying. Its reason (which
    # store, what failed) stays in the log.
    return ServiceUnavailableError(
        "The generated image could not be stored. Please retry your request, or ask for "
        "response_format=b64_json.", headers=_retry(error.retry_after))


def to_api_error(exc: Exception) -> APIError:
    """What the client sees for ``exc``: the first rule of the table that matches."""
    if isinstance(exc, APIError):
        return exc
    for kind, build in ERROR_TABLE:
        if isinstance(exc, kind):
            return build(exc)
    return InternalServerError()


def is_mapped(exc: Exception) -> bool:
    """``exc`` is an error some layer raised on purpose, not a bug."""
    return isinstance(exc, (APIError, ClientError, engine.EngineError, storage.StorageError))


#: Where the answered error waits for the request's one log line (the access log of
#: api/middleware.py), under the request's state.
ERROR_STATE = "answered_error"
#: A message is logged up to this many characters (some echo a value the client sent).
MAX_LOGGED_MESSAGE = 500


def logged_fields(error: APIError) -> dict[str, str | None]:
    """What the request's log line says of its error: what the client was told, never
    more (a key appears only masked, as in the message)."""
    return {"error_type": error.error_type, "error_code": error.code,
            "error_param": error.param, "error_message": error.message[:MAX_LOGGED_MESSAGE]}


def note_error(state: dict[str, object], error: APIError) -> None:
    """Keep ``error``'s fields (plain strings: no exception, no traceback kept alive) for
    the request's log line."""
    state[ERROR_STATE] = logged_fields(error)


def error_response(error: APIError, request: Request | None = None) -> JSONResponse:
    """The error in OpenAI's envelope; noted for the request's log line."""
    if request is not None:
        note_error(request.scope.setdefault("state", {}), error)
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
    async def mapped(request: Request, exc: Exception) -> JSONResponse:
        error = to_api_error(exc)
        if error.status_code >= 500 and not isinstance(exc, APIError):
            logger.warning("request failed", extra={"fields": {
                "request_id": getattr(request.state, "request_id", None),
                "error": f"{type(exc).__name__}: {exc}"}})
        return error_response(error, request)

    for kind in (APIError, ClientError, engine.EngineError, storage.StorageError):
        app.add_exception_handler(kind, mapped)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_client_error(translate_validation_errors(exc.errors())),
                              request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(_from_http_exception(exc, request), request)

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client went away while sending its body: nobody reads this answer.
        return error_response(ClientClosedRequest("The client closed the connection."),
                              request)

    # Any other exception is a bug: RequestContextMiddleware answers it with a 500.

"""Errors that cross layers, each carrying what OpenAI's error envelope needs.

The service and engine raise these; the HTTP layer turns every one of them into
``{"error": {"message", "type", "param", "code"}}`` with its status in one place
(:mod:`diffuserve.api.errors`). Nothing here knows about FastAPI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


class InvalidRequestError(APIError):
    """400: the request itself is wrong; retrying it unchanged cannot help."""

    status_code = 400
    error_type = "invalid_request_error"


class ContentPolicyError(InvalidRequestError):
    """400: the pipeline's safety checker flagged the output."""

    def __init__(self) -> None:
        super().__init__(
            "Your request was rejected as a result of our safety system. "
            "Your prompt may contain text that is not allowed by our safety system.",
            code="content_policy_violation",
        )


class AuthenticationError(APIError):
    status_code = 401
    error_type = "invalid_request_error"


class PermissionDeniedError(APIError):
    status_code = 403
    error_type = "invalid_request_error"


class NotFoundError(APIError):
    status_code = 404
    error_type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


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


class ModelLoadError(Exception):
    """A configured model could not be loaded; the message is meant for a person."""

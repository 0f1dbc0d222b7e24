"""Client errors in OpenAI's terms: what was wrong, which parameter, which code.

They carry no HTTP status: the HTTP layer's one table (:mod:`diffuserve.api.errors`)
decides that. Retrying the same request cannot help with any of them.
"""

from __future__ import annotations


class ClientError(Exception):
    """The request cannot be served as it is."""

    def __init__(self, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (_restore, (type(self), self.message, self.param, self.code))


def _restore(cls: type[ClientError], message: str, param: str | None,
             code: str | None) -> ClientError:
    error = cls.__new__(cls)
    ClientError.__init__(error, message, param=param, code=code)
    return error


class InvalidRequestError(ClientError):
    """A value, type or field of the request is not acceptable."""


class ModelNotFoundError(ClientError):
    """No served model has the requested name."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

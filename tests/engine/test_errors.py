"""Engine errors cross process boundaries: each survives pickling with its fields."""

from __future__ import annotations

import pickle

import pytest

from diffuserve.engine import errors
from diffuserve.protocol.errors import InvalidRequestError, ModelNotFoundError
from tests.support.engine_errors import SAMPLES


def test_every_engine_error_has_a_sample() -> None:
    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        return found.union(*(subclasses(sub) for sub in found))

    assert subclasses(errors.EngineError) == {type(error) for error in SAMPLES}


@pytest.mark.parametrize("error", SAMPLES, ids=lambda error: type(error).__name__)
def test_engine_errors_survive_pickling(error: errors.EngineError) -> None:
    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)


@pytest.mark.parametrize("error", [
    InvalidRequestError("bad n", param="n", code="integer_below_min_value"),
    ModelNotFoundError("dall-e-4"),
], ids=lambda error: type(error).__name__)
def test_client_errors_survive_pickling(error: InvalidRequestError) -> None:
    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is type(error)
    assert (copy.message, copy.param, copy.code) == (error.message, error.param, error.code)


def test_engine_errors_carry_no_http() -> None:
    for error in SAMPLES:
        assert not hasattr(error, "status_code")
        assert not hasattr(error, "headers")

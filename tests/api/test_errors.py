"""The official SDK raises the matching exception class for every status we answer.

The SDK talks to the in-process app through its ``http_client`` (a TestClient), so
server faults that a real pipeline cannot be made to produce on demand are covered too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.clients import KEY, make_client
from tests.support.fakes import FakeBackend, SlowLoadingBackend


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def sdk(tmp_path: Path, backend: FakeBackend) -> Iterator[openai.OpenAI]:
    with make_client(tmp_path, backend, max_body_bytes=4096) as test_client:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, max_retries=0,
                            http_client=test_client)


def test_400_is_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(prompt="a", model="dall-e-2", size="1792x1024")
    assert (caught.value.code, caught.value.param) == ("invalid_size", "size")


def test_401_is_authentication_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk.with_options(api_key="sk-not-the-right-key").images.generate(prompt="a")
    assert caught.value.code == "invalid_api_key"


def test_403_is_permission_denied(sdk: openai.OpenAI) -> None:
    url = sdk.images.generate(prompt="a", size="256x256").data[0].url
    assert url is not None
    tampered = url.replace("sig=", "sig=0")
    with pytest.raises(openai.PermissionDeniedError):
        sdk.get(tampered, cast_to=httpx.Response)


def test_404_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.images.generate(prompt="a", model="no-such-model")
    assert caught.value.code == "model_not_found"


def test_405_and_413_are_status_errors(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as not_allowed:
        sdk.get("/images/generations", cast_to=httpx.Response)
    assert not_allowed.value.status_code == 405
    with pytest.raises(openai.APIStatusError) as too_large:
        sdk.images.generate(prompt="a" * 5000)
    assert too_large.value.status_code == 413
    assert too_large.value.code == "request_too_large"


def test_500_is_internal_server_error(sdk: openai.OpenAI, backend: FakeBackend) -> None:
    backend.error = RuntimeError("boom")
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.images.generate(prompt="a")
    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"


def test_503_while_loading_is_internal_server_error(tmp_path: Path) -> None:
    backend = SlowLoadingBackend()
    with make_client(tmp_path, backend) as test_client:
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, max_retries=0,
                            http_client=test_client)
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.images.generate(prompt="a")
        backend.release.set()
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "5"

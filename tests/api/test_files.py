"""The local store's signed links over HTTP: whole files, byte ranges, and range errors in
OpenAI's envelope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.clients import assert_envelope, generate, make_client
from tests.support.fakes import FakeBackend


@pytest.fixture
def client(tmp_path: Path, fake_backend: FakeBackend) -> Iterator[TestClient]:
    with make_client(tmp_path, fake_backend) as test_client:
        yield test_client


@pytest.fixture
def link(client: TestClient) -> str:
    """A signed link to a freshly drawn PNG."""
    url = generate(client, prompt="a cat", size="256x256").json()["data"][0]["url"]
    assert isinstance(url, str)
    return url


@pytest.fixture
def image(client: TestClient, link: str) -> bytes:
    """The whole image behind ``link``."""
    response = client.get(link)
    assert response.status_code == 200
    return response.content


@pytest.mark.parametrize(("header", "first", "last"), [
    ("bytes=0-9", 0, 9), ("bytes=10-", 10, None), ("bytes=-8", -8, None)])
def test_a_valid_range_answers_206_with_those_bytes(
    client: TestClient, link: str, image: bytes, header: str, first: int, last: int | None
) -> None:
    response = client.get(link, headers={"Range": header})

    assert response.status_code == 206
    expected = image[first:] if last is None else image[first:last + 1]
    assert response.content == expected
    start = first % len(image)
    assert response.headers["content-range"] == (
        f"bytes {start}-{start + len(expected) - 1}/{len(image)}")
    assert response.headers["content-type"] == "image/png"


def test_head_with_a_valid_range_answers_206_without_a_body(
    client: TestClient, link: str, image: bytes
) -> None:
    response = client.head(link, headers={"Range": "bytes=0-9"})

    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 0-9/{len(image)}"
    assert response.content == b""


@pytest.mark.parametrize("header", [
    "bytes=abc", "bytes", "items=0-9", "bytes=9-3", "bytes=,", "bytes=-"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_malformed_range_is_a_400_envelope(
    client: TestClient, link: str, header: str, method: str
) -> None:
    response = client.request(method, link, headers={"Range": header})

    assert response.headers["content-type"] == "application/json"
    if method == "GET":
        error = assert_envelope(response, 400, code="invalid_range")
        assert error["type"] == "invalid_request_error"
        assert "Range header" in str(error["message"])
    else:
        assert response.status_code == 400


@pytest.mark.parametrize("header", ["bytes=100000-", "bytes=100000-100009", "bytes=-0"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_range_beyond_the_image_is_a_416_envelope_with_its_size(
    client: TestClient, link: str, image: bytes, header: str, method: str
) -> None:
    response = client.request(method, link, headers={"Range": header})

    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(image)}"
    assert response.headers["content-type"] == "application/json"
    if method == "GET":
        error = assert_envelope(response, 416, code="range_not_satisfiable")
        assert error["type"] == "invalid_request_error"
        assert str(len(image)) in str(error["message"])


def test_a_range_on_a_link_not_signed_here_is_still_403(client: TestClient, link: str) -> None:
    forged = link.replace("sig=", "sig=0")

    response = client.get(forged, headers={"Range": "bytes=abc"})

    assert_envelope(response, 403, code="invalid_signature")


def test_a_stale_if_range_serves_the_whole_image_despite_a_bad_range(
    client: TestClient, link: str, image: bytes
) -> None:
    # If-Range that no longer matches means "send it all": the Range is never read.
    response = client.get(link, headers={"Range": "bytes=abc", "If-Range": '"stale"'})

    assert response.status_code == 200
    assert response.content == image

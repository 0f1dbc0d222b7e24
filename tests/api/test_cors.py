"""CORS on the live HTTP server (``--cors-origins``): preflights answered without a key,
answers readable by the configured origins' pages, nothing for any other origin."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from tests.support.clients import AUTH, KEY
from tests.support.fakes import FakeBackend
from tests.support.threaded import serving_in_thread

APP = "http://localhost:3000"
OTHER = "http://evil.example"
#: What openai-node 7.60 asks for in a browser's preflight (``new OpenAI({...,
#: dangerouslyAllowBrowser: true})``), as Chromium lists them.
SDK_HEADERS = ("authorization,content-type,x-stainless-arch,x-stainless-lang,"
               "x-stainless-os,x-stainless-package-version,x-stainless-retry-count,"
               "x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout")
GENERATION = {"model": "dall-e-2", "prompt": "a", "size": "256x256",
              "response_format": "b64_json"}


@contextmanager
def serve(tmp_path: Path, **settings: object) -> Iterator[str]:
    config = Settings(storage_dir=tmp_path / "images", api_keys=(KEY,),
                      models=(ModelSpec(name="fake", source="fake"),), auto_aliases=True,
                      **settings)  # type: ignore[arg-type]
    with serving_in_thread(build_app(config, backends={"fake": FakeBackend()})) as url:
        yield url


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(tmp_path_factory.mktemp("cors"), cors_origins=(APP,), rate_limit_rpm=100,
               max_body_bytes=1024) as url:
        yield url


def preflight(base_url: str, origin: str, headers: str = SDK_HEADERS) -> httpx.Response:
    return httpx.options(f"{base_url}/v1/images/generations", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers})


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items()
            if name.startswith("access-control-")}


def listed(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",")}


def test_a_preflight_from_a_configured_origin_passes_without_a_key(base_url: str) -> None:
    response = preflight(base_url, APP)

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == APP
    assert listed(SDK_HEADERS) <= listed(response.headers["access-control-allow-headers"])
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["x-request-id"].startswith("req_")


def test_its_page_may_read_the_answer_its_request_id_and_its_limits(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/images/generations", json=GENERATION,
                          headers={**AUTH, "Origin": APP})

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == APP
    exposed = listed(response.headers["access-control-expose-headers"])
    limits = {name for name in response.headers if name.startswith("x-ratelimit-")}
    assert limits and limits <= exposed
    assert {"x-request-id", "retry-after"} <= exposed
    assert "access-control-allow-credentials" not in response.headers  # bearer keys only


def test_its_page_may_read_a_refusal_too(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/images/generations", json=GENERATION,
                          headers={"Origin": APP})

    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == APP
    assert response.json()["error"]["message"].startswith("You didn't provide an API key")


def test_a_body_refused_before_it_is_read_is_readable_too(base_url: str) -> None:
    # Answered by the outermost middleware from Content-Length alone.
    response = httpx.post(f"{base_url}/v1/images/generations", content=b"x" * 4096,
                          headers={**AUTH, "Origin": APP, "Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in listed(response.headers["access-control-expose-headers"])
    assert response.headers["x-request-id"].startswith("req_")


def test_another_origin_gets_no_cors_header_at_all(base_url: str) -> None:
    refused = preflight(base_url, OTHER)
    answered = httpx.post(f"{base_url}/v1/images/generations", json=GENERATION,
                          headers={**AUTH, "Origin": OTHER})

    assert refused.status_code == 405 and cors_headers(refused) == {}
    # A page of that origin cannot read it (the browser's part); a server-side client
    # sending an Origin header is answered as any other.
    assert answered.status_code == 200 and cors_headers(answered) == {}


def test_a_header_the_api_does_not_take_fails_the_preflight(base_url: str) -> None:
    response = preflight(base_url, APP, headers="authorization,x-custom")

    assert response.status_code == 400
    assert "x-custom" not in listed(response.headers["access-control-allow-headers"])


def test_without_cors_origins_no_origin_gets_cors_headers(tmp_path: Path) -> None:
    with serve(tmp_path) as url:
        assert cors_headers(preflight(url, APP)) == {}
        assert cors_headers(httpx.post(f"{url}/v1/images/generations", json=GENERATION,
                                       headers={**AUTH, "Origin": APP})) == {}

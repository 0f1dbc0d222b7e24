"""The app in process over a fake backend: a ``TestClient``, the openai SDK over it, and
the check of OpenAI's error envelope."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
from fastapi.testclient import TestClient

from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from tests.support.fakes import FakeBackend

KEY = "sk-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def make_client(tmp_path: Path, backend: FakeBackend, **settings: object) -> TestClient:
    options: dict[str, object] = {"storage_dir": tmp_path / "images", "api_keys": (KEY,)}
    options.update(settings)
    spec = ModelSpec(name="fake", source="fake", steps=10, guidance_scale=5.0,
                     vivid_guidance_scale=7.0, natural_guidance_scale=3.0)
    options.setdefault("models", (spec,))
    options.setdefault("aliases", ("dall-e-2=fake", "dall-e-3=fake"))
    options.setdefault("auto_aliases", False)
    config = Settings(**options)  # type: ignore[arg-type]
    return TestClient(build_app(config, backends={"fake": backend}),
                      raise_server_exceptions=False)


def sdk_for(client: TestClient, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, max_retries=0,
                         http_client=client)


def generate(client: TestClient, **body: object) -> httpx.Response:
    return client.post("/v1/images/generations", json=body, headers=AUTH)


def assert_envelope(response: httpx.Response, status: int, code: str | None = None,
                    param: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["param"] == param
    return dict(error)

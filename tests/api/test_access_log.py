"""The request's one log line on the live server: a refused request says why (the error's
type, code, param and message, with the request id), and never shows a key."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from diffuserve.logs import JsonFormatter
from tests.support.clients import AUTH, KEY
from tests.support.fakes import FakeBackend
from tests.support.threaded import serving_in_thread


class Lines(logging.Handler):
    """The access log's lines as the server writes them (JSON), parsed back."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def of(self, response: httpx.Response) -> list[dict[str, Any]]:
        request_id = response.headers["x-request-id"]
        return [line for line in self.lines if line.get("request_id") == request_id]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = Settings(storage_dir=tmp_path_factory.mktemp("log") / "images", api_keys=(KEY,),
                      models=(ModelSpec(name="fake", source="fake"),), auto_aliases=True,
                      max_body_bytes=1024, rate_limit_rpm=3)
    with serving_in_thread(build_app(config, backends={"fake": FakeBackend()})) as url:
        yield url


@pytest.fixture
def access_log() -> Iterator[Lines]:
    logger = logging.getLogger("diffuserve.access")
    lines, level = Lines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)


def generate(base_url: str, headers: dict[str, str] | None = None,
             **body: object) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/images/generations", headers=AUTH if headers is None
                      else headers, json={"prompt": "a", **body})


def test_a_400_logs_its_code_param_and_message_with_the_request_id(
    base_url: str, access_log: Lines
) -> None:
    # Open WebUI's default size with one of its fixed model names: its user sees only
    # "Bad Request", so the operator's log must say why.
    response = generate(base_url, model="gpt-image-1", size="512x512")

    (line,) = access_log.of(response)
    assert (line["status"], line["path"]) == (400, "/v1/images/generations")
    assert (line["error_code"], line["error_param"]) == ("invalid_size", "size")
    assert line["error_message"] == response.json()["error"]["message"] == (
        "The size is not supported by this model. Supported sizes for gpt-image-1: auto, "
        "1024x1024, 1536x1024, 1024x1536.")


def test_a_401_logs_why_without_the_key(base_url: str, access_log: Lines) -> None:
    wrong = "sk-wrong-key-that-must-stay-secret-42"
    missing = generate(base_url, headers={})
    refused = generate(base_url, headers={"Authorization": f"Bearer {wrong}"})

    (first,), (second,) = access_log.of(missing), access_log.of(refused)
    assert (first["status"], first["error_code"]) == (401, None)
    assert first["error_message"].startswith("You didn't provide an API key")
    assert (second["status"], second["error_code"]) == (401, "invalid_api_key")
    assert wrong not in json.dumps(access_log.lines) and "sk-wr***42" in second["error_message"]


def test_refusals_of_every_layer_say_why(base_url: str, access_log: Lines) -> None:
    unknown = httpx.get(f"{base_url}/v1/nothing", headers=AUTH)
    too_large = httpx.post(f"{base_url}/v1/images/generations", content=b"x" * 4096,
                           headers={**AUTH, "Content-Type": "application/json"})
    extra = generate(base_url, steps=2)

    assert [(line["status"], line["error_code"]) for response in (unknown, too_large, extra)
            for line in access_log.of(response)] == [
        (404, "unknown_url"), (413, "request_too_large"), (400, "unknown_parameter")]
    assert access_log.of(extra)[0]["error_param"] == "steps"


def test_a_429_logs_its_limit_and_an_answered_request_logs_no_error(
    base_url: str, access_log: Lines
) -> None:
    key = {"Authorization": f"Bearer {KEY}"}
    answers = [generate(base_url, headers=key, model="dall-e-2", size="256x256",
                        response_format="b64_json") for _ in range(4)]

    statuses = [response.status_code for response in answers]
    assert 200 in statuses and statuses[-1] == 429
    (ok,) = access_log.of(answers[statuses.index(200)])
    (limited,) = access_log.of(answers[-1])
    assert not any(name.startswith("error_") for name in ok)
    assert (limited["error_type"], limited["error_code"]) == ("requests", "rate_limit_exceeded")

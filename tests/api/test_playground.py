"""The playground's routes in process: the page, its files, the rule tables it reads,
and the headers that keep it self-contained (the browser tests are in tests/web/)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from diffuserve.api.routes.playground import CONTENT_SECURITY_POLICY, WEB_FILES
from diffuserve.protocol.image_options import BACKGROUNDS, MAX_PARTIAL_IMAGES, OUTPUT_FORMATS
from diffuserve.protocol.rules import GENERIC, MAX_SEED, RULES_BY_NAME
from tests.support.clients import make_client
from tests.support.fakes import FakeBackend

WEB_DIR = Path(__file__).parents[2] / "src" / "diffuserve" / "web"


@pytest.fixture
def client(tmp_path: Path, fake_backend: FakeBackend) -> Iterator[TestClient]:
    with make_client(tmp_path, fake_backend) as test_client:
        yield test_client


def test_the_page_is_served_at_the_root_without_a_key(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>diffuserve playground</title>" in response.text


@pytest.mark.parametrize("name", sorted(WEB_FILES))
def test_every_file_has_its_type_and_a_policy_that_allows_only_this_origin(
        client: TestClient, name: str) -> None:
    response = client.get("/" if name == "index.html" else f"/playground/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == WEB_FILES[name]
    policy = response.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "http" not in policy  # no other origin anywhere
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"


def test_an_unchanged_file_is_revalidated_with_304(client: TestClient) -> None:
    first = client.get("/playground/app.js")
    again = client.get("/playground/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize("path", ["/playground/", "/playground/nope.js",
                                  "/playground/..%2Fapp.py", "/playground/index.html",
                                  "/playground/%2E%2E/config.py"])
def test_no_listing_and_no_other_file(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_rule_tables_are_the_ones_the_api_validates_with(client: TestClient) -> None:
    document = client.get("/playground/rules.json").json()
    assert set(document["names"]) == set(RULES_BY_NAME)
    for name, described in [*document["names"].items(), ("other", document["other"])]:
        rules = RULES_BY_NAME.get(name, GENERIC)
        assert described["sizes"] == list(rules.sizes)
        assert described["default_size"] == rules.default_size
        assert described["qualities"] == list(rules.qualities)
        assert described["styles"] == list(rules.styles)
        assert described["max_n"] == (1 if rules.single_image else rules.max_n)
        assert described["free_size"] == rules.free_size
        assert described["image_options"] == rules.image_options
    assert document["names"]["dall-e-3"]["edits"] is False
    assert document["names"]["dall-e-2"]["uploads"]["square"] is True
    assert document["seed"]["max"] == MAX_SEED
    assert document["output_formats"] == list(OUTPUT_FORMATS)
    assert document["backgrounds"] == list(BACKGROUNDS)
    assert document["max_partial_images"] == MAX_PARTIAL_IMAGES
    assert "jpeg" not in document["transparent_formats"]
    # What the page says of the built-in model, and where it sends a user for more.
    assert document["builtin"]["name"] == "diffuserve-emoji"
    assert "emoji" in document["builtin"]["about"]
    assert document["builtin"]["serve"].startswith("diffuserve serve --model ")
    assert "Serving real models" in document["builtin"]["guide"]


def test_the_page_learns_whether_the_server_wants_a_key(
        tmp_path: Path, fake_backend: FakeBackend) -> None:
    with make_client(tmp_path, fake_backend) as keyed:
        assert keyed.get("/playground/rules.json").json()["keys_required"] is True
    with make_client(tmp_path, fake_backend, api_keys=()) as open_server:
        assert open_server.get("/playground/rules.json").json()["keys_required"] is False


def test_no_playground_leaves_the_root_a_json_404(
        tmp_path: Path, fake_backend: FakeBackend) -> None:
    with make_client(tmp_path, fake_backend, playground=False) as client:
        for path in ("/", "/playground/app.js", "/playground/rules.json"):
            response = client.get(path)
            assert response.status_code == 404
            assert "error" in response.json()


def test_the_page_has_no_inline_code_and_only_relative_links() -> None:
    """No inline script or style (the policy would block it) and no absolute path, so
    the page works under a --public-url prefix."""
    html = (WEB_DIR / "index.html").read_text()
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers
    for link in re.findall(r'(?:src|href)="([^"#]*)"', html):
        assert not link.startswith(("/", "http:", "https:", "//")), link
    for script in WEB_DIR.glob("*.js"):
        text = script.read_text()
        assert not re.search(r"""fetch\(\s*["'`]/""", text), script.name
        assert "innerHTML" not in text, script.name  # text only: no markup from answers
        assert "eval(" not in text, script.name


def test_the_key_is_never_put_in_a_url() -> None:
    api = (WEB_DIR / "api.js").read_text()
    assert "Authorization = `Bearer ${key}`" in api
    for script in WEB_DIR.glob("*.js"):
        text = script.read_text()
        assert not re.search(r"[?&](api_?key|key|token)=", text), script.name
        assert "console.log" not in text, script.name

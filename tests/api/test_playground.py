"""The playground's routes in process: the page, its files, the rule tables it reads,
and the headers that keep it self-contained (the browser tests are in tests/web/)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from diffuserve.api.routes.playground import CONTENT_SECURITY_POLICY, WEB_FILES
from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from diffuserve.config.adapters import AdapterSpec, derive
from diffuserve.protocol.image_options import BACKGROUNDS, MAX_PARTIAL_IMAGES, OUTPUT_FORMATS
from diffuserve.protocol.rules import GENERIC, MAX_SEED, RULES_BY_NAME
from tests.support.clients import AUTH, KEY, assert_envelope, make_client
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
        for path in ("/", "/playground/app.js", "/playground/rules.json",
                     "/playground/adapters.json"):
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


# ---------------------------------------------------------------- adapters.json

ADAPTERS = "/playground/adapters.json"


@pytest.fixture
def adapters_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "secret-folder" / "loras"
    folder.mkdir(parents=True)
    for name in ("pixel", "ink"):
        (folder / f"{name}.safetensors").write_bytes(b"x")
    (folder / "notes.txt").write_text("not an adapter")
    (folder / "sub.safetensors").mkdir()  # a folder, not an adapter file
    return folder


def adapters_client(tmp_path: Path, folder: Path, *extra: ModelSpec,
                    derived: dict[str, Any] | None = None, **fields: Any) -> TestClient:
    """The app over fake backends: ``fake`` with an adapters folder and a declared
    adapter (``clay``, default scale 0.5), ``extra`` models, and a model ``derived``
    from ``fake`` (its models-file entry)."""
    fake = ModelSpec(name="fake", source="fake", adapters_dir=str(folder),
                     adapters=(AdapterSpec(name="clay", scale=0.5,
                                           source=str(folder.parent / "clay.safetensors")),),
                     **fields)
    models = (fake, *extra)
    if derived is not None:
        models += (ModelSpec.model_validate(derive(fake.model_dump(), derived)),)
    settings = Settings(storage_dir=tmp_path / "images", api_keys=(KEY,), models=models,
                        aliases=("dall-e-2=fake",), auto_aliases=False)
    backends = {spec.name: FakeBackend() for spec in models if spec.base is None}
    return TestClient(build_app(settings, backends=backends), raise_server_exceptions=False)


def offer(client: TestClient, model: str | None = None, route: str = "generations",
          ) -> dict[str, Any]:
    response = client.get(ADAPTERS, params={} if model is None else {"model": model},
                          headers=AUTH)
    assert response.status_code == 200, response.text
    document: dict[str, dict[str, Any]] = response.json()
    return document[route]


def test_a_models_adapters_are_its_declared_ones_and_its_folders_with_their_scales(
        tmp_path: Path, adapters_folder: Path) -> None:
    with adapters_client(tmp_path, adapters_folder) as client:
        response = client.get(ADAPTERS, params={"model": "fake"}, headers=AUTH)
        document = response.json()
        assert document["model"] == "fake"
        assert (document["max_adapters"], document["min_scale"], document["max_scale"]) == (
            8, -4.0, 4.0)
        expected = {"model": "fake", "applied": [], "adapters": [
            {"name": "clay", "scale": 0.5}, {"name": "ink", "scale": 1.0},
            {"name": "pixel", "scale": 1.0}]}
        assert document["generations"] == expected
        assert document["edits"] == expected
        # An alias answers with its model's adapters; no name means the default model.
        assert offer(client, "dall-e-2") == expected
        assert offer(client) == expected
        # Names and scales only: no folder, no file name, nothing of the disk.
        for leak in (str(tmp_path), "secret-folder", "loras", ".safetensors", "notes"):
            assert leak not in response.text, leak
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["cache-control"] == "no-store"


def test_a_file_added_to_the_folder_is_offered_at_once_and_a_removed_one_no_longer(
        tmp_path: Path, adapters_folder: Path) -> None:
    with adapters_client(tmp_path, adapters_folder) as client:
        (adapters_folder / "late.safetensors").write_bytes(b"x")
        (adapters_folder / "ink.safetensors").unlink()
        names = [adapter["name"] for adapter in offer(client, "fake")["adapters"]]
        assert names == ["clay", "late", "pixel"]


def test_a_derived_model_says_which_adapters_it_applies_and_at_what_scale(
        tmp_path: Path, adapters_folder: Path) -> None:
    derived: dict[str, Any] = {"name": "pixel-fake", "base": "fake",
               "lora": [{"name": "pixel", "scale": 0.8}, {"name": "clay"}, {"name": "gone"}]}
    with adapters_client(tmp_path, adapters_folder, derived=derived) as client:
        described = offer(client, "pixel-fake")
        assert described["model"] == "pixel-fake"
        # Its own scale, else the adapter's default; None: the adapter is missing now.
        assert described["applied"] == [{"name": "pixel", "scale": 0.8},
                                        {"name": "clay", "scale": 0.5},
                                        {"name": "gone", "scale": None}]
        assert [adapter["name"] for adapter in described["adapters"]] == [
            "clay", "ink", "pixel"]
        assert offer(client, "fake")["applied"] == []


def test_edits_are_offered_the_adapters_of_the_model_that_draws_them(
        tmp_path: Path, adapters_folder: Path) -> None:
    painter = ModelSpec(name="painter", source="fake")
    with adapters_client(tmp_path, adapters_folder, painter, edit_model="painter") as client:
        assert len(offer(client, "fake")["adapters"]) == 3
        edits = offer(client, "fake", route="edits")
        assert edits == {"model": "painter", "adapters": [], "applied": []}


def test_a_model_without_adapters_offers_none(tmp_path: Path,
                                              fake_backend: FakeBackend) -> None:
    with make_client(tmp_path, fake_backend) as client:
        assert offer(client, "fake") == {"model": "fake", "adapters": [], "applied": []}
        assert offer(client, "dall-e-3", route="edits")["adapters"] == []


def test_adapters_json_wants_the_key_and_a_served_name(
        tmp_path: Path, adapters_folder: Path) -> None:
    with adapters_client(tmp_path, adapters_folder) as client:
        assert_envelope(client.get(ADAPTERS, params={"model": "fake"}), 401)
        assert_envelope(client.get(ADAPTERS, params={"model": "fake"},
                                   headers={"Authorization": "Bearer sk-wrong-0123456789"}),
                        401, code="invalid_api_key")
        assert_envelope(client.get(ADAPTERS, params={"model": "nope"}, headers=AUTH), 404,
                        code="model_not_found", param="model")

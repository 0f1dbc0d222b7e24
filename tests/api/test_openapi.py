"""The published schema against what the server serves, and ``/docs`` without a CDN."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from diffuserve.api.openapi import request_bodies
from diffuserve.api.request_bodies import ANY_SIZE_PATTERN, FREE_SIZE_PATTERN, NEVER_SET
from diffuserve.api.routes.playground import CONTENT_SECURITY_POLICY
from diffuserve.protocol.edits import EDIT_FIELDS, VARIATION_FIELDS
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.rule_tables import NO_EDIT_NAMES
from diffuserve.protocol.rules import (
    FREE_SIZE_MAX_PIXELS,
    FREE_SIZE_MAX_RATIO,
    OPENAI_MODEL_NAMES,
    rules_for,
)
from tests.support import fuzzing
from tests.support.clients import AUTH, make_client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, fuzzing.FuzzBackend(), auto_aliases=True) as test_client:
        yield test_client


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    served: dict[str, Any] = client.get("/openapi.json", headers=AUTH).json()
    return served


def body_of(schema: dict[str, Any], path: str, media_type: str) -> dict[str, Any]:
    content: dict[str, Any] = schema["paths"][path]["post"]["requestBody"]["content"]
    found: dict[str, Any] = content[media_type]
    return found


def png_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(fuzzing.IMAGES["png"][0]).decode()


# -- sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["16x16", "3840x2160", "1024x1536", "3840x1280"])
def test_the_free_size_pattern_takes_multiples_of_16_up_to_3840(size: str) -> None:
    assert re.fullmatch(FREE_SIZE_PATTERN, size)


@pytest.mark.parametrize("size", ["10x10", "17x16", "3856x16", "016x16", "0x16", "16x",
                                  "1024X1024", " 16x16"])
def test_the_free_size_pattern_refuses_what_no_name_takes(size: str) -> None:
    assert not re.fullmatch(FREE_SIZE_PATTERN, size)


@pytest.mark.parametrize("size", ["64x64", "4096x2025", "1472x1140", "999x1001", "100x300"])
def test_the_any_size_pattern_takes_every_side_from_64_to_4096(size: str) -> None:
    assert re.fullmatch(ANY_SIZE_PATTERN, size)


@pytest.mark.parametrize("size", ["63x64", "64x4097", "064x64", "0x100", "64x", "1e3x1000"])
def test_the_any_size_pattern_refuses_other_sides(size: str) -> None:
    assert not re.fullmatch(ANY_SIZE_PATTERN, size)


@pytest.mark.parametrize(("model", "pattern", "steps"), [
    ("gpt-image-2", FREE_SIZE_PATTERN, (24, 56)),
    ("a-served-model", ANY_SIZE_PATTERN, (23, 57)),  # its own name: any side, no multiple
])
def test_a_free_size_is_served_exactly_when_the_pattern_and_the_budget_allow_it(
    model: str, pattern: str, steps: tuple[int, int]
) -> None:
    """The pattern states the sides; the description the ratio and the pixel budget:
    together they are the rule of every free-size name."""
    rules = rules_for(model)
    for width in range(8, 4200, steps[0]):
        for height in range(8, 4200, steps[1]):
            size = f"{width}x{height}"
            published = bool(re.fullmatch(pattern, size)) and (
                width * height <= FREE_SIZE_MAX_PIXELS
                and max(width, height) <= FREE_SIZE_MAX_RATIO * min(width, height))
            try:
                rules.validate(ImageGenerationRequest(prompt="a cat", size=size), model)
                served = True
            except InvalidRequestError:
                served = False
            assert served == (published or size in rules.sizes), size


# Found by the negative fuzz: null was in a named size list's enum but not in its type.
@pytest.mark.parametrize("model", [None, "fake", "dall-e-2", "dall-e-3", "gpt-image-1",
                                   "gpt-image-2"])
def test_in_json_every_optional_field_may_be_null_for_every_name(
    client: TestClient, schema: dict[str, Any], model: str | None,
) -> None:
    """OpenAI reads null as "not given": the schema says so for each field of each name's
    branch, and the server serves it."""
    body_schema = body_of(schema, "/v1/images/generations", "application/json")["schema"]
    validator = jsonschema_rs.validator_for({**body_schema, "components": schema["components"]})
    optional = [field for field in body_schema["properties"]
                if field not in (*body_schema.get("required", ()), *NEVER_SET)]
    assert "size" in optional and "output_format" in optional
    body = {"prompt": "a cat", "model": model, **dict.fromkeys(optional)}
    assert validator.is_valid(body), [e.message for e in validator.iter_errors(body)]
    response = client.post("/v1/images/generations", headers=AUTH, json=body)
    assert response.status_code == 200, response.text


def test_10x10_is_refused_by_every_name(client: TestClient) -> None:
    for model in ("fake", *OPENAI_MODEL_NAMES):
        response = client.post("/v1/images/generations", headers=AUTH,
                               json={"prompt": "a cat", "model": model, "size": "10x10"})
        assert response.status_code == 400, model


# -- bodies ------------------------------------------------------------------------------


def test_the_json_edit_body_lists_its_fields_images_and_mask(schema: dict[str, Any]) -> None:
    body = body_of(schema, "/v1/images/edits", "application/json")["schema"]
    assert set(body["properties"]) == {*EDIT_FIELDS, "moderation", "images", "image", "mask"}
    assert set(body["required"]) == {"prompt"}
    assert body["additionalProperties"] is False
    image_url = body["properties"]["images"]["items"]["anyOf"][0]["properties"]["image_url"]
    assert re.match(image_url["pattern"], png_data_url())


def json_edit_validator(schema: dict[str, Any]) -> Any:
    body = body_of(schema, "/v1/images/edits", "application/json")["schema"]
    return jsonschema_rs.validator_for({**body, "components": schema["components"]})


#: JSON edits by how they give their images (a png data URL stands for ``URL``).
JSON_EDIT_IMAGES: dict[str, dict[str, Any]] = {
    "a list of image_url objects": {"images": [{"image_url": "URL"}]},
    "a list of bare data URLs": {"images": ["URL"]},
    "one image as image_url": {"image": {"image_url": "URL"}},
    "one image as its data URL": {"image": "URL"},
    "one image, images null": {"image": "URL", "images": None},
    "a list, image null": {"images": ["URL"], "image": None},
    "a mask as its data URL": {"images": ["URL"], "mask": "URL"},
    "a mask as image_url": {"image": "URL", "mask": {"image_url": "URL"}},
    "both images and image": {"images": ["URL"], "image": "URL"},
    "neither": {},
    "both null": {"images": None, "image": None},
    "an empty list": {"images": []},
    "a list as image": {"image": ["URL"]},
    "an object without image_url": {"image": {"file_id": "file_1"}},
    "an object mask without image_url": {"image": "URL", "mask": {}},
    "svg": {"image": "URL", "svg": {"model": "x"}},
    "frame_count": {"image": "URL", "frame_count": 2},
    "svg null": {"image": "URL", "svg": None, "frame_count": None},
}


def _filled(value: Any) -> Any:
    if value == "URL":
        return png_data_url()
    if isinstance(value, list):
        return [_filled(item) for item in value]
    if isinstance(value, dict):
        return {key: _filled(item) for key, item in value.items()}
    return value


@pytest.mark.parametrize("model", ["fake", "gpt-image-1", "dall-e-2"])
@pytest.mark.parametrize("shape", list(JSON_EDIT_IMAGES))
def test_the_json_edit_schema_takes_exactly_the_images_the_server_takes(
    client: TestClient, schema: dict[str, Any], shape: str, model: str,
) -> None:
    """However the images are given (a list or one image, an image_url object or the
    bare data URL, the mask alike), the schema and the server agree."""
    body = {"prompt": "a hat", "model": model, **_filled(JSON_EDIT_IMAGES[shape])}
    published = json_edit_validator(schema).is_valid(body)
    response = client.post("/v1/images/edits", headers=AUTH, json=body)
    assert response.status_code == (200 if published else 400), response.text


def test_the_json_edit_schema_narrows_one_image_to_the_formats_a_name_takes(
    client: TestClient, schema: dict[str, Any],
) -> None:
    webp = "data:image/webp;base64," + base64.b64encode(fuzzing.IMAGES["webp"][0]).decode()
    validator = json_edit_validator(schema)
    for model, served in (("dall-e-2", False), ("gpt-image-1", True)):
        for images in ({"image": webp}, {"images": [webp]}, {"image": {"image_url": webp}}):
            body = {"prompt": "a hat", "model": model, **images}
            assert validator.is_valid(body) is served, body
            response = client.post("/v1/images/edits", headers=AUTH, json=body)
            assert response.status_code == (200 if served else 400), response.text


def test_the_json_edit_says_in_words_that_partial_images_are_streamed(
    schema: dict[str, Any],
) -> None:
    body = body_of(schema, "/v1/images/edits", "application/json")["schema"]
    assert "partial_images above 0 only with stream=true" in body["description"]
    unstreamed = {"prompt": "a hat", "model": "fake", "image": png_data_url(),
                  "partial_images": 2}
    assert json_edit_validator(schema).is_valid(unstreamed)  # the fuzz excuses its 400


def test_the_edit_form_lists_every_field_it_reads(schema: dict[str, Any]) -> None:
    form = body_of(schema, "/v1/images/edits", "multipart/form-data")
    assert set(form["schema"]["properties"]) == {
        *EDIT_FIELDS, "image", "mask", "markup"} - set(NEVER_SET)
    assert set(form["schema"]["required"]) == {"prompt", "image"}
    assert set(form["encoding"]) == {"image", "mask", "markup", "lora"}
    assert form["encoding"]["lora"] == {"contentType": "application/json"}


@pytest.mark.parametrize("media_type", ["multipart/form-data", "application/json"])
def test_each_edit_field_has_the_type_the_protocol_reads(
    schema: dict[str, Any], media_type: str,
) -> None:
    """Every field the protocol reads, with its type; those no name takes (the GIF and
    SVG fields) only as null in JSON and not at all in a form."""
    types = {str: "string", int: "integer", float: "number", bool: "boolean"}
    properties = body_of(schema, "/v1/images/edits", media_type)["schema"]["properties"]
    for name, kind in EDIT_FIELDS.items():
        if name in NEVER_SET:
            assert properties.get(name, {"type": "null"}) == {"type": "null"}, name
            continue
        published = properties[name]
        if kind is object:  # lora: an object or a list of them (a JSON part in a form)
            assert {"object", "array"} <= {part.get("type") for part in published["anyOf"]}
            continue
        declared = published.get("type") or ("string" if "enum" in published else None)
        assert types[kind] in (declared if isinstance(declared, list) else [declared]), name


def test_the_variation_form_lists_its_fields_and_no_mask_or_prompt(
    schema: dict[str, Any],
) -> None:
    form = body_of(schema, "/v1/images/variations", "multipart/form-data")
    assert set(form["schema"]["properties"]) == {*VARIATION_FIELDS, "image"}
    assert {"mask", "prompt"}.isdisjoint(form["schema"]["properties"])


def test_the_bodies_are_built_from_the_protocol_not_the_routes(
    client: TestClient, schema: dict[str, Any],
) -> None:
    for path, content in request_bodies(client.app).items():  # type: ignore[arg-type]
        assert schema["paths"][path]["post"]["requestBody"]["content"] == content


def test_the_schema_names_the_edit_families_and_no_name_that_cannot_edit(
    schema: dict[str, Any],
) -> None:
    branches = body_of(schema, "/v1/images/edits", "application/json")["schema"]["anyOf"]
    named = {name for branch in branches
             for name in branch["properties"]["model"].get("enum", ()) if name}
    assert named == set(OPENAI_MODEL_NAMES) - set(NO_EDIT_NAMES)


@pytest.mark.parametrize("model", ["fake", *OPENAI_MODEL_NAMES])
def test_a_minimal_json_edit_is_served_exactly_for_the_names_the_schema_lists(
    client: TestClient, model: str,
) -> None:
    response = client.post("/v1/images/edits", headers=AUTH, json={
        "prompt": "a hat", "model": model, "images": [{"image_url": png_data_url()}]})
    assert response.status_code == (400 if model in NO_EDIT_NAMES else 200), response.text


def test_an_edit_takes_as_many_images_as_the_schema_says(
    client: TestClient, schema: dict[str, Any],
) -> None:
    # The names' limits; the served model's own is in words (the fuzz's takes 16).
    body = body_of(schema, "/v1/images/edits", "application/json")["schema"]
    assert body["properties"]["images"]["maxItems"] == 16
    (dall_e_2,) = [branch for branch in body["anyOf"]
                   if "dall-e-2" in branch["properties"]["model"].get("enum", ())]
    assert dall_e_2["properties"]["images"]["maxItems"] == 1
    assert "too_many_images saying its limit" in body["description"]

    def edit(images: int) -> Any:
        return client.post("/v1/images/edits", headers=AUTH, json={
            "prompt": "a hat", "model": "gpt-image-1",
            "images": [{"image_url": png_data_url()}] * images})

    assert edit(16).status_code == 200
    refused = edit(17)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "too_many_images"


def test_a_streamed_edit_is_documented_as_server_sent_events(schema: dict[str, Any]) -> None:
    answers = schema["paths"]["/v1/images/edits"]["post"]["responses"]["200"]["content"]
    assert set(answers) == {"application/json", "text/event-stream"}


# -- /docs -------------------------------------------------------------------------------


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self._in_script = tag == "script"
        if tag == "style" or any(name == "style" or name.startswith("on") for name, _ in attrs):
            self.inline_scripts += 1

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_the_docs_page_needs_the_key(client: TestClient) -> None:
    assert client.get("/docs").status_code == 401
    assert client.get("/openapi.json").status_code == 401


def test_the_docs_page_loads_only_same_origin_files_under_the_playground_policy(
    client: TestClient,
) -> None:
    page = client.get("/docs", headers=AUTH)
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    references = _References()
    references.feed(page.text)
    assert references.urls and references.inline_scripts == 0
    for url in references.urls:
        assert not re.match(r"^[a-z]+:|^//", url), url  # relative: this origin
        asset = client.get("/" + url)  # public: no key
        assert asset.status_code == 200, url
        assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert asset.headers["x-content-type-options"] == "nosniff"
    init = client.get("/docs/swagger-init.js").text
    assert '"openapi.json"' in init and "validatorUrl: null" in init


def test_the_docs_files_are_revalidated_and_outside_the_schema(
    client: TestClient, schema: dict[str, Any],
) -> None:
    first = client.get("/docs/swagger-ui.css")
    again = client.get("/docs/swagger-ui.css", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert not [path for path in schema["paths"] if path.startswith("/docs")]
    unknown = client.get("/docs/../pyproject.toml")
    assert unknown.status_code == 404
    assert client.get("/docs/index.html").status_code == 404

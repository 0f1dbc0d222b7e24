"""The API against its own published schema: a bounded, derandomized schemathesis run.

Requests are generated from ``/openapi.json`` as the app serves it (behind its API key),
valid ones and ones that break the schema, and sent to the app in process over the fake
backend. ``benchmarks/fuzz.py`` runs the same thing longer, seeded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection
from schemathesis.python.asgi import get_client
from schemathesis.schemas import BaseSchema

from tests.support import fuzzing
from tests.support.clients import AUTH

#: The operations that need a key: they document 401.
PROTECTED = ["POST /v1/images/generations", "POST /v1/images/edits",
             "POST /v1/images/variations", "POST /v1/content_provenance_checks",
             "GET /v1/models", "GET /v1/models/{model_id}",
             "POST /v1/models/{model_id}/load", "POST /v1/models/{model_id}/unload"]


# A fresh app for each test: schemathesis' pytest plugin ends every ASGI lifespan after
# each test, and the app's engine, once stopped, does not start again.
@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return fuzzing.build_fuzz_app(tmp_path)


@pytest.fixture
def schema(app: FastAPI) -> Iterator[BaseSchema]:
    try:
        yield fuzzing.load_schema(app)
    finally:
        fuzzing.stop_apps()


def test_every_published_operation_is_fuzzed(schema: BaseSchema) -> None:
    assert {label for label, _ in fuzzing.TEST_PLAN} == set(fuzzing.labels(schema))


def test_the_protected_operations_are_those_documenting_401(schema: BaseSchema) -> None:
    assert [op.label for op in fuzzing.operations_with(schema, status=401)] == PROTECTED


@pytest.mark.parametrize(
    ("label", "mode"), list(fuzzing.TEST_PLAN),
    ids=[f"{label} {mode.value}" for label, mode in fuzzing.TEST_PLAN])
def test_answers_conform_to_the_schema(schema: BaseSchema, label: str,
                                       mode: GenerationMode) -> None:
    """Documented statuses only, no 5xx, no 422, OpenAI's envelope on every error,
    documented content types, and a 4xx for every request that breaks the schema."""
    tally = fuzzing.Tally()
    fuzzing.fuzz_operation(fuzzing.find(schema, label), mode,
                           max_examples=fuzzing.TEST_PLAN[label, mode], tally=tally)
    assert tally.cases[label] > 0


@pytest.mark.parametrize("label", fuzzing.BODIES)
def test_valid_requests_draw_images(schema: BaseSchema, label: str) -> None:
    """The valid cases reach the drawing and encoding path, not only rejections."""
    tally = fuzzing.Tally()
    fuzzing.fuzz_operation(fuzzing.find(schema, label), fuzzing.POSITIVE, max_examples=20,
                           tally=tally)
    assert tally.statuses[label][200] > 0


@pytest.mark.parametrize("mode", [fuzzing.POSITIVE, fuzzing.NEGATIVE])
def test_edits_are_fuzzed_as_forms_and_as_json(schema: BaseSchema,
                                               mode: GenerationMode) -> None:
    tally = fuzzing.Tally()
    fuzzing.fuzz_operation(fuzzing.find(schema, fuzzing.EDITS), mode,
                           max_examples=fuzzing.TEST_PLAN[fuzzing.EDITS, mode], tally=tally)
    sent = tally.media_types[fuzzing.EDITS]
    assert sent["multipart/form-data"] > 0 and sent["application/json"] > 0, sent


def test_valid_requests_must_be_served() -> None:
    assert fuzzing.positive_data_accepted in fuzzing.CHECKS
    assert negative_data_rejection in fuzzing.CHECKS


def test_a_refusal_for_another_reason_is_not_excused(schema: BaseSchema) -> None:
    """A size refused for no budget of its own is not the free sizes' refusal."""
    case = fuzzing.find(schema, fuzzing.GENERATIONS).Case(
        body={"prompt": "a cat", "model": "fake", "size": "10x10"},
        media_type="application/json")
    response = fuzzing.send(case, AUTH)
    assert response.json()["error"]["code"] == "invalid_size"
    assert fuzzing.refusal_for(case, response) is None


@pytest.mark.parametrize(("body", "code"), [
    ({"prompt": "a cat", "model": "gpt-image-2", "size": "3840x1024"}, "invalid_size"),
    ({"prompt": "a cat", "model": "fake", "n": 3, "seed": 2**32 - 2},
     "integer_above_max_value"),
    ({"prompt": "a cat", "model": "not-served"}, "model_not_found"),
])
def test_each_documented_refusal_is_what_the_server_answers(
    schema: BaseSchema, body: dict[str, object], code: str,
) -> None:
    """Each refusal the schema cannot state is sent for the reason the fuzz names."""
    case = fuzzing.find(schema, fuzzing.GENERATIONS).Case(body=body,
                                                          media_type="application/json")
    response = fuzzing.send(case, AUTH)
    assert response.json()["error"]["code"] == code
    refusal = fuzzing.refusal_for(case, response)
    assert refusal is not None and refusal.code == code


@pytest.mark.parametrize(("stream", "status"), [(None, 400), (False, 400), (True, 200)])
def test_a_json_edits_partial_images_unstreamed_is_the_documented_refusal(
    schema: BaseSchema, stream: bool | None, status: int,
) -> None:
    """The JSON edit's schema says "partial images are streamed" in words only (with its
    images-or-image rule the branches would outgrow schemathesis): the fuzz excuses that
    refusal, and only that one."""
    image = "data:image/png;base64," + base64.b64encode(fuzzing.IMAGES["png"][0]).decode()
    case = fuzzing.find(schema, fuzzing.EDITS).Case(
        body={"prompt": "a hat", "model": "fake", "image": image, "partial_images": 2,
              "stream": stream}, media_type="application/json")
    response = fuzzing.send(case, AUTH)
    assert response.status_code == status
    refusal = fuzzing.refusal_for(case, response)
    assert (refusal is not None) == (status == 400)
    if refusal is not None:
        assert (refusal.code, response.json()["error"]["param"]) == ("invalid_value",
                                                                     "partial_images")


# Found by benchmarks/fuzz.py: hmac.compare_digest refused non-ASCII text with a TypeError.
def test_a_link_signature_with_non_ascii_text_is_refused_not_a_500(
    schema: BaseSchema,
) -> None:
    case = fuzzing.find(schema, "GET /v1/images/files/{name}").Case(
        path_parameters={"name": "img_0.png"}, query={"expires": "9999999999", "sig": "é"})
    response = fuzzing.send(case, AUTH)
    case.validate_response(response, checks=fuzzing.CHECKS, headers=AUTH)


@pytest.mark.parametrize("label", PROTECTED)
def test_without_a_key_protected_routes_answer_401(schema: BaseSchema, label: str) -> None:
    tally = fuzzing.Tally()
    fuzzing.fuzz_operation(fuzzing.find(schema, label), fuzzing.POSITIVE, max_examples=15,
                           headers=None, tally=tally, checks=fuzzing.CHECKS_WITHOUT_KEY)
    assert tally.statuses[f"{label} (no key)"][401] > 0


def test_the_schema_itself_needs_the_key(app: FastAPI, schema: BaseSchema) -> None:
    with get_client(app) as client:  # type: ignore[arg-type]  # Starlette's ASGI types
        refused = client.get("/openapi.json")
        served = client.get("/openapi.json", headers=AUTH)
    assert refused.status_code == 401
    assert fuzzing.envelope_problem(401, refused.headers["content-type"],
                                    refused.content) is None
    assert served.status_code == 200
    assert set(served.json()["paths"]) == {op.path for op in fuzzing.operations(schema)}


@pytest.mark.parametrize("body", [
    {"detail": "Not Found"},
    {"error": {"message": "x", "type": "invalid_request_error", "param": None}},
    {"error": {"message": "x", "type": "t", "param": None, "code": None, "extra": 1}},
    {"error": {"message": "", "type": "t", "param": None, "code": None}},
    {"error": {"message": "x", "type": "t", "param": 3, "code": None}},
    {"error": "x"},
])
def test_the_envelope_check_refuses_other_error_bodies(body: object) -> None:
    assert fuzzing.envelope_problem(400, "application/json", json.dumps(body).encode())


def test_the_envelope_check_refuses_errors_that_are_not_json() -> None:
    assert fuzzing.envelope_problem(500, "text/plain", b"Internal Server Error")
    assert fuzzing.envelope_problem(400, "application/json", b"{")


def test_the_envelope_check_accepts_openais_envelope_and_ignores_successes() -> None:
    error = {"error": {"message": "x", "type": "t", "param": "n", "code": None}}
    assert fuzzing.envelope_problem(400, "application/json", json.dumps(error).encode()) is None
    assert fuzzing.envelope_problem(200, "image/png", b"\x89PNG") is None

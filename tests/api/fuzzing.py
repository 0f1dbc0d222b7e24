"""Property-based fuzzing of the HTTP API against its own published OpenAPI schema.

One place for what ``tests/api/test_fuzz.py`` (a bounded run) and ``benchmarks/fuzz.py``
(a longer one) share: the in-process app over the fake backend, the schema it serves,
the checks every answer must pass, and the loop that draws cases for one operation.

Schemathesis generates the requests from ``/openapi.json``: positive cases within the
published bounds and negative cases that break them. Every answer must be a status the
schema documents for its route, never a 5xx (the fake backend never fails) and never a
422, every error OpenAI's envelope with exactly its four keys, every content type the
documented one, and every schema-breaking request a 4xx.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import APIOperation as AnyOperation
from schemathesis import Case as AnyCase
from schemathesis import CheckContext, CheckFunction, GenerationMode, Response
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import BaseSchema

from tests.api.test_app import AUTH, make_client
from tests.conftest import FakeBackend

# schemathesis' generics, parameterised by its specification types: any will do here.
APIOperation = AnyOperation[Any, Any, Any, Any]
Case = AnyCase[APIOperation]

ENVELOPE_KEYS = {"message", "type", "param", "code"}


def build_fuzz_app(tmp: Path) -> FastAPI:
    """The app the API tests use (fake backend, one API key), its storage under ``tmp``."""
    # make_client's TestClient is never entered: schemathesis runs the app's lifespan.
    return make_client(tmp, FakeBackend()).app  # type: ignore[return-value]


def load_schema(app: FastAPI) -> BaseSchema:
    """The schema exactly as the app serves it, fetched with the key (it is protected).

    Loading starts the app's lifespan (models load); it runs until ``stop_apps()``.
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    # Schema-breaking input must be refused as the client's fault: any 4xx, never a 5xx
    # (schemathesis' default list would let a 5xx pass).
    schema.config.checks.negative_data_rejection.expected_statuses = ["4xx"]
    return schema


def stop_apps() -> None:
    """End the lifespans schemathesis started (the engine's threads stop)."""
    shutdown_lifespans()


def envelope_problem(status: int, content_type: str, content: bytes) -> str | None:
    """What is wrong with an answer's error body, if anything: every error is
    ``{"error": {"message", "type", "param", "code"}}`` in JSON, nothing more."""
    if status < 400:
        return None
    if not content_type.startswith("application/json"):
        return f"error {status} is {content_type!r}, not JSON"
    try:
        body = json.loads(content)
    except ValueError as exc:
        return f"error {status} body is not JSON: {exc}"
    if not isinstance(body, dict) or set(body) != {"error"}:
        return f"error body is not OpenAI's envelope: {body!r}"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != ENVELOPE_KEYS:
        return f"error object must have exactly {sorted(ENVELOPE_KEYS)}: {error!r}"
    if not (isinstance(error["message"], str) and error["message"]
            and isinstance(error["type"], str) and error["type"]
            and all(error[key] is None or isinstance(error[key], str)
                    for key in ("param", "code"))):
        return f"message and type must be text, param and code text or null: {error!r}"
    return None


def openai_error_envelope(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Schemathesis check: every error body is OpenAI's envelope, exactly."""
    content_type = response.headers.get("content-type", [""])[0]
    problem = envelope_problem(response.status_code, content_type, response.content)
    assert problem is None, problem
    return True


def never_422(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Validation errors are OpenAI's 400, never FastAPI's 422."""
    assert response.status_code != 422, "422 sent; validation errors must be 400"
    return True


def unauthenticated_is_401(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Without a key, a protected route answers 401 whatever else is wrong.

    A URL that routes nowhere is not a protected route: its 404 ``unknown_url`` comes
    before authentication (``/v1/models/{model_id:path}`` routes no id with a line break
    inside, ``.*`` stopping at it), as OpenAI answers unknown URLs.
    """
    if response.status_code == 404 and json.loads(response.content)["error"]["code"] == (
            "unknown_url"):
        return True
    assert response.status_code == 401, f"{response.status_code} without an API key, not 401"
    return True


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    openai_error_envelope,
    never_422,
]

GENERATIONS = "POST /v1/images/generations"
MODEL = "GET /v1/models/{model_id}"
#: The names the fuzz app serves (see make_client): most generated model names are
#: unknown (404), so half the valid cases of these routes name one of these instead, or
#: the drawing and encoding path (and a found model) would rarely be reached.
SERVED_MODELS = ("fake", "dall-e-2", "dall-e-3")

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE

#: What the bounded run draws: (operation, mode) → cases. Generation draws PIL images
#: and encodes PNGs (n up to 10, sizes up to 1792x1024), so it is kept moderate; routes
#: without parameters run out of distinct cases after one. Negative cases exist only
#: where the schema has a bound to break (a body, a length limit): a bare string path
#: parameter or no parameter at all cannot be sent in violation of the schema.
TEST_PLAN: Mapping[tuple[str, GenerationMode], int] = {
    (GENERATIONS, POSITIVE): 100,
    (GENERATIONS, NEGATIVE): 100,
    ("GET /v1/images/files/{name}", POSITIVE): 50,
    ("GET /v1/images/files/{name}", NEGATIVE): 50,
    ("GET /v1/models", POSITIVE): 5,
    (MODEL, POSITIVE): 40,
    ("POST /v1/images/edits", POSITIVE): 30,
    ("POST /v1/images/edits", NEGATIVE): 30,
    ("POST /v1/images/variations", POSITIVE): 20,
    ("POST /v1/images/variations", NEGATIVE): 20,
    ("GET /health", POSITIVE): 5,
    ("GET /ready", POSITIVE): 5,
}


@dataclass
class Tally:
    """What a run saw: cases and statuses per operation, and each failure's report."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, label: str, status: int) -> None:
        self.cases[label] += 1
        self.statuses.setdefault(label, Counter())[status] += 1


def operations(schema: BaseSchema) -> list[APIOperation]:
    """Every operation in the schema, in its order; a schema error fails loudly."""
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())  # type: ignore[union-attr]  # an Err raises here: loud
    return found


def operations_with(schema: BaseSchema, status: int) -> list[APIOperation]:
    """The operations whose documented answers include ``status``."""
    return [operation for operation in operations(schema)
            if str(status) in operation.definition.raw.get("responses", {})]


def send(case: Case, headers: Mapping[str, str]) -> Response:
    """Send ``case`` to the app in process.

    An exception the app lets out (a 500 to a real client) propagates through the ASGI
    transport instead of becoming a response: it fails the case as a server error, with
    the request to reproduce it.
    """
    try:
        return Response.from_any(case.call(headers=dict(headers)))
    except Exception as exc:
        raise AssertionError(
            f"Server error: the app raised {type(exc).__name__}: {exc}\n"
            f"Reproduce with:\n    {case.as_curl_command(headers=dict(headers))}") from exc


def fuzz_operation(
    operation: APIOperation,
    mode: GenerationMode,
    *,
    max_examples: int,
    seed: int | None = None,
    headers: Mapping[str, str] | None = AUTH,
    checks: list[CheckFunction] | None = None,
    tally: Tally | None = None,
) -> None:
    """Draw up to ``max_examples`` cases of ``mode`` for ``operation``, send each to the
    in-process app and validate the answer; raise the (shrunk) failure, if any.

    With ``seed`` None the run is derandomized: the same cases every time.
    """
    strategy = operation.as_strategy(generation_mode=mode)
    if operation.label in (GENERATIONS, MODEL) and mode is POSITIVE:
        strategy = st.one_of(strategy, st.tuples(strategy, st.sampled_from(SERVED_MODELS))
                             .map(_naming_model))
    chosen = CHECKS if checks is None else checks
    sent = dict(headers or {})
    label = operation.label if headers else f"{operation.label} (no key)"

    def one_case(case: Case) -> None:
        try:
            response = send(case, sent)
        except AssertionError:
            if tally is not None:
                tally.record(label, 500)
            raise
        if tally is not None:
            tally.record(label, response.status_code)
        case.validate_response(response, checks=chosen, headers=sent)

    test: Callable[..., None] = hypothesis.given(strategy)(one_case)
    test = hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=seed is None,
        # No example database: nothing is written into the repository, and a run
        # depends on its seed alone.
        database=None,
        # Large bodies and filtered draws are what schema-driven generation does.
        suppress_health_check=list(HealthCheck),
        # Explaining a failure re-runs it many times; the failure report is enough.
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        print_blob=False,
    )(test)
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    test()


def _naming_model(drawn: tuple[Case, str]) -> Case:
    case, model = drawn
    if case.operation.label == MODEL:
        case.path_parameters = {**(case.path_parameters or {}), "model_id": model}
    elif isinstance(case.body, dict):
        case.body["model"] = model
    return case


def labels(schema: BaseSchema) -> list[str]:
    return [operation.label for operation in operations(schema)]


def find(schema: BaseSchema, label: str) -> APIOperation:
    for operation in operations(schema):
        if operation.label == label:
            return operation
    raise LookupError(f"{label} is not in the schema: {labels(schema)}")


def describe(tally: Tally) -> dict[str, Any]:
    """A JSON-able summary of a tally."""
    return {
        label: {"cases": tally.cases[label],
                "statuses": dict(sorted(tally.statuses.get(label, Counter()).items()))}
        for label in tally.cases
    }

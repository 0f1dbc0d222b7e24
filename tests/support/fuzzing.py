"""Property-based fuzzing of the HTTP API against its own published OpenAPI schema.

One place for what ``tests/api/test_fuzz.py`` (a bounded run) and ``benchmarks/fuzz.py``
(a longer one) share: the in-process app over the fake backend, the schema it serves,
the checks every answer must pass, and the loop that draws cases for one operation.

Schemathesis generates the requests from ``/openapi.json``: positive cases within the
published bounds and negative cases that break them. Every answer must be a status the
schema documents for its route, never a 5xx (the fake backend never fails) and never a
422, every error OpenAI's envelope with exactly its four keys, every content type the
documented one, every schema-breaking request a 4xx, and every request within the
schema a 2xx, but for the few refusals the schema cannot state (:data:`REFUSALS`).

Files are real images in positive cases (schemathesis would send random bytes, which
the server rightly refuses as ``invalid_image``): the multipart parts through a
strategy registered for ``image/png``, the JSON form's data URLs swapped for ones of the
same format. Negative cases keep random bytes.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema_rs
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from PIL import Image
from schemathesis import APIOperation as AnyOperation
from schemathesis import Case as AnyCase
from schemathesis import CheckContext, CheckFunction, GenerationMode, Response
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import BaseSchema
from schemathesis.transport.serialization import serialize_binary

from diffuserve.engine.types import TRANSPARENT_BACKGROUND, TaskKind
from diffuserve.protocol.edits import GPT_IMAGE_UPLOADS
from diffuserve.protocol.rules import (
    FREE_SIZE_MAX_PIXELS,
    FREE_SIZE_MAX_RATIO,
    MAX_SEED,
    OPENAI_MODEL_NAMES,
)
from tests.support.clients import AUTH, KEY, make_client
from tests.support.fakes import FakeBackend

# schemathesis' generics, parameterised by its specification types: any will do here.
APIOperation = AnyOperation[Any, Any, Any, Any]
Case = AnyCase[APIOperation]

ENVELOPE_KEYS = {"message", "type", "param", "code"}


#: The names the fuzz app serves: its model and every OpenAI name (an alias of it), so
#: that each family of rules in the schema is reached.
SERVED_MODELS = ("fake", *OPENAI_MODEL_NAMES)


class FuzzBackend(FakeBackend):
    """The fake backend, with every task and feature, and as many images in one edit as
    any name takes: what a served model cannot draw (400 unsupported_value, or
    too_many_images past its own limit) is the model's, not the schema's."""

    tasks = frozenset(TaskKind)
    features = frozenset({TRANSPARENT_BACKGROUND})
    max_input_images = GPT_IMAGE_UPLOADS.max_images
    #: An admin may unload it; the next request loads it again.
    unloads = True

    def unload(self) -> None:
        self._loaded = False


def build_fuzz_app(tmp: Path) -> FastAPI:
    """The app the API tests use (fake backend, one API key), its storage under ``tmp``,
    serving :data:`SERVED_MODELS`."""
    # make_client's TestClient is never entered: schemathesis runs the app's lifespan.
    # The key is an admin's, so that loads and unloads are served too.
    keys = tmp / "keys"
    keys.write_text(f"{KEY} fuzzer role=admin\n")
    client = make_client(tmp, FuzzBackend(), auto_aliases=True, api_keys=(),
                         api_keys_file=keys)
    return client.app  # type: ignore[return-value]


def load_schema(app: FastAPI) -> BaseSchema:
    """The schema exactly as the app serves it, fetched with the key (it is protected).

    Loading starts the app's lifespan (models load); it runs until ``stop_apps()``.
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    # Schema-breaking input must be refused as the client's fault: any 4xx, never a 5xx
    # (schemathesis' default list would let a 5xx pass).
    schema.config.checks.negative_data_rejection.expected_statuses = ["4xx"]
    # Input within the schema must be served (its default list lets 404s, 409s and 5xxs
    # pass); the refusals the schema cannot state are in REFUSALS.
    schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx"]
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


GENERATIONS = "POST /v1/images/generations"
EDITS = "POST /v1/images/edits"
VARIATIONS = "POST /v1/images/variations"
MODEL = "GET /v1/models/{model_id}"
LOAD = "POST /v1/models/{model_id}/load"
UNLOAD = "POST /v1/models/{model_id}/unload"
#: The routes that name a model in their path.
MODEL_PAGES = (MODEL, LOAD, UNLOAD)
FILES = "GET /v1/images/files/{name}"
PROVENANCE_CHECKS = "POST /v1/content_provenance_checks"
#: The routes whose bodies follow the per-name rules.
BODIES = (GENERATIONS, EDITS, VARIATIONS)


@dataclass(frozen=True)
class Refusal:
    """A refusal of a request within the schema, which the schema cannot state: the
    routes, status and error code it comes with, why, and a test on the request that
    confirms the reason (so any other refusal still fails the case)."""

    labels: tuple[str, ...]
    status: int
    code: str
    reason: str
    #: Given the case and the error's param.
    applies: Callable[[Case, str | None], bool]


def _fields(case: Case) -> dict[str, Any]:
    return case.body if isinstance(case.body, dict) else {}


def _model_of(case: Case) -> str | None:
    """The name a case asks for; None where it leaves the choice to the server."""
    if case.operation.label in MODEL_PAGES:
        return str((case.path_parameters or {}).get("model_id"))
    model = _fields(case).get("model")
    if model is None or (model == "" and case.operation.label != GENERATIONS):
        return None  # the default (an empty form field or edit name means it too)
    return str(model)


def _integral_float(case: Case, param: str | None) -> bool:
    return isinstance(_fields(case).get(param or ""), float)


def _seed_too_large(case: Case, param: str | None) -> bool:
    fields = _fields(case)
    seed, n = fields.get("seed"), fields.get("n")
    return isinstance(seed, int) and seed + (n if isinstance(n, int) else 1) - 1 > MAX_SEED


def _free_size_outside_budget(case: Case, param: str | None) -> bool:
    size = _fields(case).get("size")
    match = re.fullmatch(r"(\d+)x(\d+)", size) if isinstance(size, str) else None
    if match is None:
        return False
    width, height = int(match.group(1)), int(match.group(2))
    return (width * height > FREE_SIZE_MAX_PIXELS
            or max(width, height) > FREE_SIZE_MAX_RATIO * min(width, height))


def _partial_images_not_streamed(case: Case, param: str | None) -> bool:
    fields = _fields(case)
    return (case.media_type == "application/json" and param == "partial_images"
            and bool(fields.get("partial_images")) and fields.get("stream") is not True)


def _adapter_named_twice(lora: Any) -> bool:
    if isinstance(lora, str):  # a form's JSON part
        try:
            lora = json.loads(lora)
        except ValueError:
            return False
    names = [entry.get("name") for entry in lora if isinstance(entry, dict)] \
        if isinstance(lora, list) else []
    return len(names) != len(set(names))


def _has_line_break(model_id: str) -> bool:
    """A path parameter as sent: its line breaks may be percent-encoded."""
    return any(mark in model_id.lower() for mark in ("\r", "\n", "%0a", "%0d"))


REFUSALS = (
    Refusal((*BODIES, *MODEL_PAGES), 404, "model_not_found",
            "the schema takes any model name; only the served ones are found (GET /v1/models "
            "lists them)", lambda case, _: _model_of(case) not in (None, *SERVED_MODELS)),
    Refusal(MODEL_PAGES, 404, "unknown_url",
            "a path parameter matches within one line: an id with a line break routes "
            "nowhere (no model's name has one)",
            lambda case, _: _has_line_break(str(_model_of(case)))),
    Refusal((FILES,), 403, "invalid_signature",
            "a link is served only with the signature this server made for it",
            lambda case, _: True),
    Refusal((FILES,), 404, "expired", "a link is served only until it expires",
            lambda case, _: True),
    Refusal((FILES,), 404, "image_not_found", "only images this server drew are served",
            lambda case, _: True),
    Refusal(BODIES, 400, "invalid_type",
            "JSON Schema's integer admits 3.0; the server wants an integer written as one, "
            "as OpenAI's does", _integral_float),
    Refusal((EDITS,), 400, "invalid_value",
            "a markup cannot be combined with a mask: one more anyOf in the form's schema "
            "would pass what schemathesis can unfold (the description says it)",
            lambda case, param: param == "markup"
            and {"mask", "markup"} <= set(_fields(case))),
    Refusal((EDITS,), 400, "invalid_value",
            "partial images only when streamed: in the JSON edit's schema that rule and "
            "its images-or-image rule together would pass the intersections schemathesis' "
            "canonicalizer allows (the description says it)", _partial_images_not_streamed),
    Refusal(BODIES, 400, "integer_above_max_value",
            "image i uses seed + i, so seed + n - 1 must stay within 32 bits: JSON Schema "
            "cannot add two fields (the description says it)", _seed_too_large),
    Refusal(BODIES, 400, "adapter_not_found",
            "a model's adapters are its own and an adapters folder changes while the "
            "server runs: the schema takes any well-formed name",
            lambda case, param: (param or "").startswith("lora")),
    Refusal(BODIES, 400, "invalid_value",
            "each adapter named once: JSON Schema's uniqueItems compares whole objects "
            "(the description says it)", lambda case, param: param == "lora"
            and _adapter_named_twice(_fields(case).get("lora"))),
    Refusal(BODIES, 400, "invalid_size",
            "a free size's aspect ratio and pixel budget: a pattern cannot compare the two "
            "sides (the description says it)", _free_size_outside_budget),
)


def refusal_for(case: Case, response: Response) -> Refusal | None:
    """The documented refusal that explains ``response`` to ``case``, if one does."""
    try:
        error = json.loads(response.content)["error"]
        code, param = error["code"], error["param"]
    except (ValueError, KeyError, TypeError):
        return None
    return next((refusal for refusal in REFUSALS
                 if case.operation.label in refusal.labels
                 and (response.status_code, code) == (refusal.status, refusal.code)
                 and refusal.applies(case, param)), None)


def positive_data_accepted(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Schemathesis' positive_data_acceptance (a request within the schema gets a 2xx),
    but for the refusals of :data:`REFUSALS`."""
    if response.status_code >= 300 and refusal_for(case, response) is not None:
        return True
    return positive_data_acceptance(ctx, response, case)


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_accepted,
    openai_error_envelope,
    never_422,
]
#: Without a key nothing is served: every answer is 401 instead.
CHECKS_WITHOUT_KEY: list[CheckFunction] = [
    *(check for check in CHECKS if check is not positive_data_accepted),
    unauthenticated_is_401,
]

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE

#: What the bounded run draws: (operation, mode) → cases. Generation draws PIL images
#: and encodes PNGs (n up to 10, sizes up to 1792x1024), so it is kept moderate; routes
#: without parameters run out of distinct cases after one. Negative cases exist only
#: where the schema has a bound to break (a body, a length limit): a bare string path
#: parameter or no parameter at all cannot be sent in violation of the schema.
TEST_PLAN: Mapping[tuple[str, GenerationMode], int] = {
    (GENERATIONS, POSITIVE): 100,
    (GENERATIONS, NEGATIVE): 100,
    (FILES, POSITIVE): 50,
    (FILES, NEGATIVE): 50,
    ("GET /v1/models", POSITIVE): 5,
    (MODEL, POSITIVE): 40,
    (LOAD, POSITIVE): 10,
    (UNLOAD, POSITIVE): 10,
    (EDITS, POSITIVE): 40,
    (EDITS, NEGATIVE): 40,
    (VARIATIONS, POSITIVE): 30,
    (VARIATIONS, NEGATIVE): 30,
    (PROVENANCE_CHECKS, POSITIVE): 20,
    (PROVENANCE_CHECKS, NEGATIVE): 20,
    ("GET /health", POSITIVE): 5,
    ("GET /ready", POSITIVE): 5,
}


@dataclass
class Tally:
    """What a run saw: cases and statuses per operation, and each failure's report."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    media_types: dict[str, Counter[str | None]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, label: str, status: int, media_type: str | None = None) -> None:
        self.cases[label] += 1
        self.statuses.setdefault(label, Counter())[status] += 1
        self.media_types.setdefault(label, Counter())[media_type] += 1


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
    strategy = operation.as_strategy(generation_mode=mode).filter(
        lambda case: within_schema(case) in (None, mode is POSITIVE))
    if mode is POSITIVE:
        strategy = st.tuples(strategy, st.integers(0, 2)).map(_with_real_images)
    if operation.label in (*BODIES, *MODEL_PAGES) and mode is POSITIVE:
        # Most generated names are unknown (404): half the cases name a served model
        # instead, or the drawing path (and a found model) would rarely be reached.
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
            tally.record(label, response.status_code, case.media_type)
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
    """A served name instead of an unknown one: any for a model's page; "fake" (the one
    served name that is no OpenAI name) in a body, whose other fields follow the rules
    of any other name."""
    case, model = drawn
    if case.operation.label in MODEL_PAGES:
        case.path_parameters = {**(case.path_parameters or {}), "model_id": model}
    elif isinstance(case.body, dict) and _model_of(case) not in (None, *OPENAI_MODEL_NAMES):
        case.body["model"] = "fake"
    return case


#: The images of the positive cases: square (as dall-e-2 wants), all of one size so
#: that any of them masks any other, fully transparent in their top left quarter (where
#: a mask or markup lets the image through) except the jpeg, which has no alpha.
IMAGE_SIDE = 32


def _picture(mode: str) -> Image.Image:
    image = Image.new("RGBA", (IMAGE_SIDE, IMAGE_SIDE), (200, 60, 40, 255))
    image.paste((0, 0, 0, 0), (0, 0, IMAGE_SIDE // 2, IMAGE_SIDE // 2))
    if mode == "P":  # a palette with one transparent entry (a tRNS chunk)
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    return image.convert(mode)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


#: Three of each format; every png can be an image, a mask or a markup.
IMAGES: dict[str, tuple[bytes, ...]] = {
    "png": tuple(_encoded(_picture(mode), "PNG") for mode in ("RGBA", "LA", "P")),
    "webp": tuple(_encoded(_picture(mode), "WEBP") for mode in ("RGBA", "RGB", "L")),
    "jpeg": tuple(_encoded(_picture(mode), "JPEG") for mode in ("RGB", "L", "CMYK")),
}
#: The multipart file parts. A form cannot say which formats each model name takes
#: (dall-e-2: png only), so every part is a png; the JSON form's data URLs name theirs.
FILE_PARTS = ("image", "mask", "markup", "file")
_DATA_URL = re.compile(r"^data:image/(png|webp|jpeg);base64,")


def _with_real_images(drawn: tuple[Case, int]) -> Case:
    """A positive case's files as real images: a form's parts as pngs, the JSON edit's
    data URLs as images of the formats they name."""
    case, choice = drawn
    if not isinstance(case.body, dict):
        return case
    if case.media_type == "multipart/form-data":
        for name in FILE_PARTS:
            if name in case.body:
                case.body[name] = IMAGES["png"][choice]
        return case
    body, entries = case.body, case.body.get("images")
    if isinstance(entries, list):
        body["images"] = [_real_image(entry, choice) for entry in entries]
    for name in ("image", "mask"):
        if name in body:
            body[name] = _real_image(body[name], choice)
    return case


def _real_image(entry: Any, choice: int) -> Any:
    """One image of the JSON form, ``{"image_url": URL}`` or the URL itself, with a data
    URL made one of a real image of the format it names; anything else as it is."""
    if isinstance(entry, dict) and "image_url" in entry:
        return {**entry, "image_url": _real_image(entry["image_url"], choice)}
    match = _DATA_URL.match(entry) if isinstance(entry, str) else None
    if match is None:
        return entry
    return match.group(0) + base64.b64encode(IMAGES[match.group(1)][choice]).decode()


def _as_read(value: Any, schema: Any) -> Any:
    """A form field as the server reads it: the text schemathesis sends for ``value``,
    read as the type the schema gives the field (a file part as any string)."""
    if not isinstance(schema, dict):
        return value
    if schema.get("format") == "binary":
        return ""
    if isinstance(value, list):  # one part per item: a single one is a plain field
        return _as_read(value[0], schema) if len(value) == 1 else [
            _as_read(item, schema) for item in value]
    text = value if type(value) is str else serialize_binary(value).decode(errors="replace")
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"\s*-?[0-9]+\s*", text):
        return int(text)
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if kind == "boolean" and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    return text


def within_schema(case: Case) -> bool | None:
    """Whether a form's body is valid by the schema; None for other cases.

    Every part of a form is text, so a value breaks the schema only if its text does:
    an object sent for a string field is a string by the time the server reads it.
    Schemathesis checks that its negative bodies break the schema only where they hold
    no file, and fills in a positive form's fields one by one from the values the schema
    names (which can break a branch of its ``anyOf``): so for forms, the fuzz keeps only
    the cases that are what their mode says, as the server reads them.
    """
    if case.media_type != "multipart/form-data" or not isinstance(case.body, dict):
        return None
    body = case.operation.get_body_for_media_type(case.media_type)
    if body is None:
        return None
    schema = body.validation_schema
    properties = schema.get("properties", {})
    fields = {name: _as_read(value, properties.get(name)) for name, value in case.body.items()
              if value != []}  # no item, no part
    return bool(jsonschema_rs.validator_for(schema).is_valid(fields))


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

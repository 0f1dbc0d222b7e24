"""Content provenance through a live server and the openai SDK: every format and route
carries a C2PA manifest that c2pa-python validates, and POST /v1/content_provenance_checks
answers for own, stripped, foreign, tampered and non-image files.

One module-scoped server (the tiny SD pipeline at 2 steps, a key). The watermark's
survival on the built-in model's artwork and on photos is measured by
benchmarks/provenance.py; here an edit of a photo-like picture stands for a photo.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.live_server import LiveServer, start_server
from tests.support.provenance import (
    actions_of,
    encoded,
    manifest_report,
    photo_like,
    reencoded,
    tampered_jpeg,
)

pytestmark = pytest.mark.e2e

API_KEY = "sk-test-provenance-0123456789abcdef"
FAST: dict[str, Any] = {"num_inference_steps": 2}
GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
EDITED = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(["--model", f"tiny-sd={tiny_models['sd']}", "--api-key", API_KEY],
                        tmp_path_factory.mktemp("e2e-provenance"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0,
                        timeout=120)
    yield sdk
    sdk.close()


def _b64(item: Any) -> bytes:
    assert isinstance(item.b64_json, str)
    return base64.b64decode(item.b64_json)


def _generated(client: openai.OpenAI, fmt: str = "png", **extra: Any) -> bytes:
    result = client.images.generate(model="tiny-sd", prompt="a red cube", size="256x256",
                                    output_format=fmt,  # type: ignore[arg-type]
                                    response_format="b64_json",
                                    extra_body={**FAST, "seed": 3, **extra})
    return _b64(result.data[0])


def _results(check: Any) -> dict[str, Any]:
    """The check's results by type (the watermark's is diffuserve's own type, which the
    SDK keeps as it came)."""
    assert check.object == "content_provenance_check"
    assert abs(check.created_at - time.time()) < 120
    return {result.type: result for result in check.results}


@pytest.fixture(scope="module")
def own_jpeg(client: openai.OpenAI) -> tuple[bytes, float]:
    before = time.time()
    return _generated(client, "jpeg"), before


# --- every image carries a manifest ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_each_format_carries_a_valid_manifest_of_its_generation(
        client: openai.OpenAI, fmt: str) -> None:
    state, manifest = manifest_report(_generated(client, fmt), fmt)
    (action,) = actions_of(manifest)
    assert state == "Valid"
    assert (action["action"], action["digitalSourceType"]) == ("c2pa.created", GENERATED)
    assert action["softwareAgent"]["name"] == "tiny-sd"
    assert manifest["claim_generator_info"][0]["name"] == "diffuserve"


def test_a_url_image_carries_the_manifest(client: openai.OpenAI) -> None:
    result = client.images.generate(model="tiny-sd", prompt="a hill", size="256x256",
                                    response_format="url", extra_body=FAST)
    assert result.data[0].url is not None
    state, manifest = manifest_report(httpx.get(result.data[0].url).content, "png")
    assert state == "Valid" and actions_of(manifest)[0]["action"] == "c2pa.created"


def test_edits_and_variations_are_signed_as_edited_from_their_input(
        client: openai.OpenAI) -> None:
    upload = ("photo.png", encoded(photo_like(256, 256), "png"), "image/png")
    edit = client.images.edit(model="tiny-sd", image=upload, prompt="a brighter sky",
                              size="256x256", output_format="webp",  # type: ignore[arg-type]
                              response_format="b64_json", extra_body=FAST)
    with pytest.warns(DeprecationWarning, match="^deprecated$"):  # the SDK's own notice
        variation = client.images.create_variation(
            model="tiny-sd", image=upload, size="256x256", response_format="b64_json",
            extra_body=FAST)
    for data, fmt in ((_b64(edit.data[0]), "webp"), (_b64(variation.data[0]), "png")):
        state, manifest = manifest_report(data, fmt)
        assert state == "Valid"
        assert [a["action"] for a in actions_of(manifest)] == ["c2pa.opened", "c2pa.edited"]
        assert actions_of(manifest)[1]["digitalSourceType"] == EDITED
        assert [i["relationship"] for i in manifest["ingredients"]] == ["parentOf"]


def test_a_streams_previews_and_final_image_carry_the_manifest(
        client: openai.OpenAI) -> None:
    stream = client.images.generate(model="tiny-sd", prompt="a red cube", size="256x256",
                                    stream=True, partial_images=1, extra_body=FAST)
    kinds = []
    for event in stream:
        kinds.append(event.type)
        state, manifest = manifest_report(base64.b64decode(event.b64_json), "png")
        assert state == "Valid" and actions_of(manifest)[0]["action"] == "c2pa.created"
    assert kinds == ["image_generation.partial_image", "image_generation.completed"]


# --- checks ------------------------------------------------------------------------------


def test_a_check_of_own_output_detects_the_manifest_model_and_time(
        client: openai.OpenAI, own_jpeg: tuple[bytes, float]) -> None:
    data, before = own_jpeg
    results = _results(client.content_provenance_checks.create(file=("own.jpg", data)))

    c2pa, mark = results["c2pa"], results["watermark"]
    assert (c2pa.outcome, c2pa.validation_state) == ("detected", "valid")
    assert (c2pa.issuer, c2pa.model) == ("diffuserve (self-signed)", "tiny-sd")
    made = time.mktime(time.strptime(c2pa.generated_at, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before - 1 <= made <= time.time()
    assert mark.outcome == "detected"


def test_stripped_and_recompressed_output_keeps_only_the_watermark(
        client: openai.OpenAI) -> None:
    # An edit of a photo-like picture: what the model drew over a photograph.
    edit = client.images.edit(model="tiny-sd", prompt="the same, sharper",
                              image=("photo.png", encoded(photo_like(384, 256), "png")),
                              size="384x256", response_format="b64_json",
                              extra_body={**FAST, "seed": 5})
    stripped = reencoded(_b64(edit.data[0]), "jpeg", quality=85)

    results = _results(client.content_provenance_checks.create(file=("s.jpg", stripped)))
    assert (results["c2pa"].outcome, results["c2pa"].validation_state) == (
        "not_detected", "not_present")
    assert results["watermark"].outcome == "detected"


def test_a_foreign_image_has_nothing(client: openai.OpenAI) -> None:
    foreign = encoded(photo_like(320, 240, seed=9), "webp", quality=90)
    results = _results(client.content_provenance_checks.create(file=("f.webp", foreign)))
    assert (results["c2pa"].outcome, results["c2pa"].validation_state) == (
        "not_detected", "not_present")
    assert results["c2pa"].model is None and results["c2pa"].issuer is None
    assert results["watermark"].outcome == "not_detected"


def test_a_tampered_jpeg_is_invalid(client: openai.OpenAI,
                                    own_jpeg: tuple[bytes, float]) -> None:
    results = _results(client.content_provenance_checks.create(
        file=("t.jpg", tampered_jpeg(own_jpeg[0]))))
    assert (results["c2pa"].outcome, results["c2pa"].validation_state) == (
        "not_detected", "invalid")
    assert results["c2pa"].model is None


@pytest.mark.parametrize(("data", "code"), [
    (b"%PDF-1.7 not an image", "invalid_image"),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "invalid_image_format"),
])
def test_a_file_that_is_no_png_jpeg_or_webp_is_a_400(
        client: openai.OpenAI, data: bytes, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.content_provenance_checks.create(file=("x.bin", data))
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (
        400, code, "file")


def test_a_check_needs_a_key_and_a_file(server: LiveServer) -> None:
    files = {"file": ("x.png", encoded(photo_like(64, 64), "png"), "image/png")}
    url = f"{server.base_url}/v1/content_provenance_checks"
    assert httpx.post(url, files=files).status_code == 401
    missing = httpx.post(url, headers={"Authorization": f"Bearer {API_KEY}"},
                         files={"image": files["file"]})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "unknown_parameter"


def test_an_upload_is_not_marked_by_checking_it(client: openai.OpenAI) -> None:
    data = encoded(photo_like(256, 256, seed=2), "png")
    client.content_provenance_checks.create(file=("p.png", io.BytesIO(data)))
    results = _results(client.content_provenance_checks.create(file=("p.png", data)))
    assert results["c2pa"].validation_state == "not_present"

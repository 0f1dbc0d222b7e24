"""End to end: a real ``diffuserve serve`` process driven by the official ``openai`` SDK.

One module-scoped server (two tiny real pipelines, an API key, a known signing secret)
serves almost every test; the restart test starts two more on one storage directory.
Generations stay cheap: the tiny models draw at 64 px and 2 steps, then resize.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from diffuserve.protocol.rules import OPENAI_MODEL_NAMES
from tests.support.live_server import LiveServer, start_server

pytestmark = pytest.mark.e2e

API_KEY = "sk-test-e2e-0123456789abcdef"
SIGNING_SECRET = "e2e-signing-secret-0123456789abcdef"
URL_TTL = 3600
FAST: dict[str, Any] = {"num_inference_steps": 2}
VERBATIM_PREFIX = (
    "I NEED to test how the tool works with extremely simple prompts. "
    "DO NOT add any detail, just use it AS-IS:"
)
NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
ENVELOPE_KEYS = {"message", "type", "param", "code"}


# --- helpers ---------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """The size of a PNG image; fails for anything that is not a PNG."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def b64_png(item: Any) -> bytes:
    assert item.url is None
    assert isinstance(item.b64_json, str)
    return base64.b64decode(item.b64_json, validate=True)


def sign(name: str, expires: int, secret: str = SIGNING_SECRET) -> str:
    """The HMAC that storage/signing.py puts on a link, computed independently."""
    return hmac.new(secret.encode(), f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()


def file_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def assert_envelope(response: httpx.Response, status: int, **expected: Any) -> dict[str, Any]:
    """OpenAI's error envelope, all four keys present, with the expected values."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    for key, value in expected.items():
        assert error[key] == value, (key, error)
    return dict(error)


def assert_bad_request(exc: openai.BadRequestError, param: str | None, code: str | None,
                       message: str) -> None:
    assert exc.status_code == 400
    assert isinstance(exc.body, dict)
    assert set(exc.body) == ENVELOPE_KEYS
    assert exc.body["message"] == message
    assert exc.type == "invalid_request_error"
    assert exc.param == param
    assert exc.code == code


# --- servers and clients ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """tiny-sd (first, so OpenAI's names point at it) and tiny-sdxl, one key, known secret."""
    tmp = tmp_path_factory.mktemp("e2e-main")
    live = start_server(
        [
            "--model", f"tiny-sd={tiny_models['sd']}",
            "--model", f"tiny-sdxl={tiny_models['sdxl']}",
            "--alias", "xl=tiny-sdxl",
            "--api-key", API_KEY,
            "--url-ttl", str(URL_TTL),
        ],
        tmp,
        env={"DIFFUSERVE_SIGNING_SECRET": SIGNING_SECRET},
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0,
                        timeout=120)
    yield sdk
    sdk.close()


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    """A plain HTTP client that sends no Authorization header."""
    with httpx.Client(base_url=server.base_url, timeout=60) as plain:
        yield plain


@pytest.fixture(scope="module")
def url_image(client: openai.OpenAI) -> tuple[str, float, float]:
    """One url-format image of 512x512 from dall-e-2, with the time window it was made in."""
    before = time.time()
    result = client.images.generate(model="dall-e-2", prompt="a lighthouse", size="512x512",
                                    extra_body={**FAST, "seed": 7})
    after = time.time()
    assert len(result.data) == 1
    assert result.data[0].url is not None
    return result.data[0].url, before, after


# --- health, models --------------------------------------------------------------------


def test_health_and_ready_need_no_key(http: httpx.Client) -> None:
    health = http.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": {"tiny-sd": True, "tiny-sdxl": True}}


def test_models_list_has_names_and_aliases(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    ids = [model.id for model in models]
    assert set(ids) == {"tiny-sd", "tiny-sdxl", "xl", *OPENAI_MODEL_NAMES}
    assert len(ids) == len(set(ids))
    for model in models:
        assert model.object == "model"
        assert model.owned_by == "diffuserve"
        assert isinstance(model.created, int) and model.created > 1_600_000_000


def test_models_retrieve_alias(client: openai.OpenAI) -> None:
    model = client.models.retrieve("dall-e-3")
    assert model.id == "dall-e-3"
    assert model.object == "model"
    assert model.owned_by == "diffuserve"


def test_models_retrieve_unknown(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert isinstance(info.value.body, dict)
    assert "no-such-model" in info.value.body["message"]


# --- authentication --------------------------------------------------------------------


def test_wrong_key_is_masked(server: LiveServer) -> None:
    wrong = "sk-wrong-key-9876543210zz"
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=wrong,
                       max_retries=0) as sdk, pytest.raises(openai.AuthenticationError) as info:
        sdk.images.generate(model="dall-e-2", prompt="x")
    exc = info.value
    assert exc.status_code == 401
    assert exc.code == "invalid_api_key"
    assert isinstance(exc.body, dict)
    message = exc.body["message"]
    assert message.startswith("Incorrect API key provided: sk-wr***zz.")
    assert wrong not in message


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"},
                                     {"Authorization": "Bearer"}])
@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/images/generations"),
                                              ("GET", "/v1/models"),
                                              ("GET", "/v1/models/dall-e-3")])
def test_no_key(http: httpx.Client, method: str, path: str, headers: dict[str, str]) -> None:
    body = {"prompt": "x", "model": "dall-e-2"} if method == "POST" else None
    response = http.request(method, path, json=body, headers=headers)
    assert_envelope(response, 401, message=NO_KEY_MESSAGE, param=None)
    assert response.headers["x-request-id"].startswith("req_")


# --- routing errors --------------------------------------------------------------------


def test_unknown_route_is_404_envelope(http: httpx.Client) -> None:
    response = http.get("/v1/no-such-route", headers={"Authorization": f"Bearer {API_KEY}"})
    assert_envelope(response, 404, code="unknown_url",
                    message="Invalid URL (GET /v1/no-such-route)")


def test_wrong_method_is_405_envelope(http: httpx.Client) -> None:
    response = http.get("/v1/images/generations",
                        headers={"Authorization": f"Bearer {API_KEY}"})
    assert_envelope(response, 405, code="method_not_allowed")
    assert "POST" in response.headers["allow"]


def test_oversized_body_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.images.generate(model="dall-e-2", prompt="a" * (2 << 20), extra_body=FAST)
    exc = info.value
    assert exc.status_code == 413
    assert isinstance(exc.body, dict)
    assert exc.body["code"] == "request_too_large"
    assert exc.body["type"] == "invalid_request_error"


def test_invalid_json_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/images/generations", content=b"{not json",
                         headers={"Authorization": f"Bearer {API_KEY}",
                                  "Content-Type": "application/json"})
    error = assert_envelope(response, 400)
    assert error["message"].startswith("We could not parse the JSON body of your request.")


def test_missing_prompt_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/images/generations", json={"model": "dall-e-2"},
                         headers={"Authorization": f"Bearer {API_KEY}"})
    assert_envelope(response, 400, param="prompt", code="missing_required_parameter",
                    message="Missing required parameter: 'prompt'.")


# --- response shape --------------------------------------------------------------------


def test_url_response_fields(client: openai.OpenAI, server: LiveServer,
                             url_image: tuple[str, float, float]) -> None:
    url, before, after = url_image
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == server.base_url
    assert parts.path.startswith("/v1/images/files/img_")
    assert parts.path.endswith(".png")
    query = parse_qs(parts.query)
    assert set(query) == {"expires", "sig"}
    expires = int(query["expires"][0])
    # valid for 60 minutes after generation
    assert int(before) + URL_TTL <= expires <= int(after) + URL_TTL + 1


def test_raw_response_fields_dall_e_2(client: openai.OpenAI) -> None:
    before = int(time.time())
    raw = client.images.with_raw_response.generate(
        model="dall-e-2", prompt="a cat", size="256x256", extra_body=FAST
    )
    after = int(time.time()) + 1
    assert raw.status_code == 200
    assert raw.headers["x-request-id"].startswith("req_")
    body = raw.http_response.json()
    assert set(body) == {"created", "data"}
    assert isinstance(body["created"], int) and before <= body["created"] <= after
    assert len(body["data"]) == 1
    # default response_format is url; dall-e-2 has no revised_prompt, not even null
    assert set(body["data"][0]) == {"url"}
    parsed = raw.parse()
    assert parsed.created == body["created"]
    assert parsed.data[0].url == body["data"][0]["url"]
    assert parsed.data[0].b64_json is None
    assert parsed.data[0].revised_prompt is None


def test_raw_response_fields_dall_e_3_b64(client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.generate(
        model="dall-e-3", prompt="a cat", response_format="b64_json", extra_body=FAST
    )
    assert raw.headers["x-request-id"].startswith("req_")
    body = raw.http_response.json()
    assert set(body) == {"created", "data"}
    assert set(body["data"][0]) == {"b64_json", "revised_prompt"}
    parsed = raw.parse()
    item = parsed.data[0]
    assert png_size(b64_png(item)) == (1024, 1024)  # dall-e-3's default size
    assert isinstance(item.revised_prompt, str)
    assert item.revised_prompt.startswith("a cat")
    assert item.revised_prompt != "a cat"


def test_request_ids_differ_and_errors_carry_one(client: openai.OpenAI) -> None:
    first = client.models.with_raw_response.list().headers["x-request-id"]
    second = client.models.with_raw_response.list().headers["x-request-id"]
    assert first != second
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model="dall-e-3", prompt="x", n=2)
    assert (info.value.request_id or "").startswith("req_")


def test_default_model_and_size(client: openai.OpenAI) -> None:
    """No model, no size, no format: dall-e-2's defaults, a 1024x1024 url image."""
    result = client.images.generate(prompt="a boat", extra_body=FAST)
    item = result.data[0]
    assert item.url is not None and item.b64_json is None
    assert item.revised_prompt is None
    image = httpx.get(item.url, timeout=30)
    assert image.status_code == 200
    assert png_size(image.content) == (1024, 1024)


def test_dall_e_2_style_accepted_and_unused(client: openai.OpenAI) -> None:
    result = client.images.generate(model="dall-e-2", prompt="a cat", style="natural",
                                    size="256x256", response_format="b64_json",
                                    extra_body=FAST)
    assert result.data[0].revised_prompt is None
    assert png_size(b64_png(result.data[0])) == (256, 256)


# --- image files -----------------------------------------------------------------------


def test_url_fetch_needs_no_key(url_image: tuple[str, float, float]) -> None:
    url, _, _ = url_image
    response = httpx.get(url, timeout=30)  # no Authorization header
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert png_size(response.content) == (512, 512)


def test_tampered_signature_is_403(http: httpx.Client,
                                   url_image: tuple[str, float, float]) -> None:
    parts = urlsplit(url_image[0])
    query = parse_qs(parts.query)
    sig = query["sig"][0]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    response = http.get(parts.path, params={"expires": query["expires"][0], "sig": flipped})
    assert_envelope(response, 403, code="invalid_signature")
    # a later expiry with the old signature is tampering too
    later = int(query["expires"][0]) + 3600
    response = http.get(parts.path, params={"expires": later, "sig": sig})
    assert_envelope(response, 403, code="invalid_signature")
    # and so is a missing signature
    response = http.get(parts.path, params={"expires": query["expires"][0]})
    assert_envelope(response, 403, code="invalid_signature")


def test_link_signed_with_configured_secret(http: httpx.Client,
                                            url_image: tuple[str, float, float]) -> None:
    url = url_image[0]
    name = file_name(url)
    original = parse_qs(urlsplit(url).query)
    expires = int(original["expires"][0])
    assert original["sig"][0] == sign(name, expires)
    # a fresh link signed here with DIFFUSERVE_SIGNING_SECRET is accepted
    later = int(time.time()) + 120
    response = http.get(urlsplit(url).path, params={"expires": later, "sig": sign(name, later)})
    assert response.status_code == 200
    assert png_size(response.content) == (512, 512)


def test_expired_link_is_404(http: httpx.Client, url_image: tuple[str, float, float]) -> None:
    path = urlsplit(url_image[0]).path
    expired = int(time.time()) - 5
    response = http.get(path, params={"expires": expired, "sig": sign(file_name(path), expired)})
    assert_envelope(response, 404, code="expired")


def test_signed_link_to_missing_image_is_404(http: httpx.Client) -> None:
    name = "img_" + "A" * 32 + ".png"
    later = int(time.time()) + 120
    response = http.get(f"/v1/images/files/{name}",
                        params={"expires": later, "sig": sign(name, later)})
    assert_envelope(response, 404, code="image_not_found")


# --- sizes, n, models ------------------------------------------------------------------


@pytest.mark.parametrize("size", ["256x256", "512x512", "1024x1024", "1792x1024", "1024x1792"])
def test_b64_every_size(client: openai.OpenAI, size: str) -> None:
    result = client.images.generate(model="tiny-sd", prompt="a hill", size=size,
                                    response_format="b64_json", extra_body=FAST)
    assert len(result.data) == 1
    width, height = (int(part) for part in size.split("x"))
    assert png_size(b64_png(result.data[0])) == (width, height)
    assert result.data[0].revised_prompt is None


@pytest.mark.parametrize(("model", "size"), [("dall-e-2", "256x256"), ("dall-e-2", "512x512"),
                                             ("dall-e-3", "1792x1024"),
                                             ("dall-e-3", "1024x1792")])
def test_openai_names_accept_their_sizes(client: openai.OpenAI, model: str, size: str) -> None:
    result = client.images.generate(model=model, prompt="a tree", size=size,
                                    response_format="b64_json", extra_body=FAST)
    width, height = (int(part) for part in size.split("x"))
    assert png_size(b64_png(result.data[0])) == (width, height)


def test_n_three_distinct_images(client: openai.OpenAI) -> None:
    result = client.images.generate(model="dall-e-2", prompt="a fish", n=3, size="256x256",
                                    response_format="b64_json", extra_body=FAST)
    assert len(result.data) == 3
    pngs = [b64_png(item) for item in result.data]
    assert all(png_size(png) == (256, 256) for png in pngs)
    assert len(set(pngs)) == 3


def test_n_three_urls(client: openai.OpenAI) -> None:
    result = client.images.generate(model="dall-e-2", prompt="a fish", n=3, size="256x256",
                                    extra_body=FAST)
    urls = [item.url for item in result.data]
    assert len(set(urls)) == 3
    contents = []
    for url in urls:
        assert url is not None
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200
        contents.append(response.content)
        assert png_size(response.content) == (256, 256)
    assert len(set(contents)) == 3


@pytest.mark.parametrize("model", ["tiny-sdxl", "xl"])
def test_sdxl_model(client: openai.OpenAI, model: str) -> None:
    result = client.images.generate(model=model, prompt="a dog", size="512x512",
                                    response_format="b64_json", extra_body=FAST)
    assert png_size(b64_png(result.data[0])) == (512, 512)


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.images.generate(model="no-such-model", prompt="x", extra_body=FAST)
    exc = info.value
    assert exc.code == "model_not_found"
    assert exc.param == "model"
    assert isinstance(exc.body, dict)
    assert exc.body["message"] == (
        "The model `no-such-model` does not exist or you do not have access to it."
    )


# --- determinism and extensions --------------------------------------------------------


def _draw(client: openai.OpenAI, **kwargs: Any) -> bytes:
    extra = {**FAST, **kwargs.pop("extra", {})}
    params: dict[str, Any] = {"model": "tiny-sd", "prompt": "a red cube", "size": "256x256",
                              "response_format": "b64_json", **kwargs}
    result = client.images.generate(**params, extra_body=extra)
    return b64_png(result.data[0])


def test_same_seed_same_pixels_and_different_seed_differs(client: openai.OpenAI) -> None:
    first = _draw(client, extra={"seed": 1234})
    again = _draw(client, extra={"seed": 1234})
    other = _draw(client, extra={"seed": 1235})
    # The same picture to the bit; the files differ in their C2PA manifests (each its own
    # time and id), so pixels are compared, not bytes.
    assert pixel_distance(first, again) == 0
    assert pixel_distance(first, other) > 2


def test_n_images_follow_consecutive_seeds(client: openai.OpenAI) -> None:
    result = client.images.generate(model="tiny-sd", prompt="a red cube", n=2, size="256x256",
                                    response_format="b64_json", extra_body={**FAST, "seed": 50})
    second_alone = _draw(client, extra={"seed": 51})
    other_seed = _draw(client, extra={"seed": 52})
    # A batch of two and a batch of one may round differently in the last bit on some
    # CPUs (BLAS picks its kernels by shape): the same picture, not always the same bytes.
    assert pixel_distance(b64_png(result.data[1]), second_alone) <= 2
    assert pixel_distance(second_alone, other_seed) > 2


def pixel_distance(first: bytes, second: bytes) -> int:
    """The largest difference of one channel of one pixel between two same-size PNGs."""
    import numpy as np

    with Image.open(io.BytesIO(first)) as a, Image.open(io.BytesIO(second)) as b:
        return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def test_user_does_not_change_output(client: openai.OpenAI) -> None:
    without = _draw(client, extra={"seed": 99})
    with_user = _draw(client, user="user-1234", extra={"seed": 99})
    assert pixel_distance(without, with_user) == 0  # the files differ in their manifests


def test_extensions_accepted(client: openai.OpenAI) -> None:
    base = _draw(client, extra={"seed": 5})
    tuned = _draw(client, extra={"seed": 5, "num_inference_steps": 3, "guidance_scale": 2.5,
                                 "negative_prompt": "blurry, low quality"})
    assert png_size(tuned) == (256, 256)
    assert pixel_distance(tuned, base) > 0
    integer_guidance = _draw(client, extra={"seed": 5, "guidance_scale": 0})
    assert png_size(integer_guidance) == (256, 256)


def test_dall_e_3_draws_its_revised_prompt(client: openai.OpenAI) -> None:
    result = client.images.generate(model="dall-e-3", prompt="a red cube", style="natural",
                                    response_format="b64_json",
                                    extra_body={**FAST, "seed": 11})
    revised = result.data[0].revised_prompt
    assert revised is not None
    direct = _draw(client, prompt=revised, size="1024x1024", extra={"seed": 11})
    assert pixel_distance(b64_png(result.data[0]), direct) == 0


# --- revised prompt --------------------------------------------------------------------


def _revised(client: openai.OpenAI, prompt: str, **kwargs: Any) -> str:
    result = client.images.generate(model="dall-e-3", prompt=prompt,
                                    response_format="b64_json", extra_body=FAST, **kwargs)
    revised = result.data[0].revised_prompt
    assert isinstance(revised, str)
    return revised


def test_revised_prompt_depends_on_style(client: openai.OpenAI) -> None:
    prompt = "a lighthouse on a cliff at dusk"
    vivid = _revised(client, prompt, style="vivid")
    natural = _revised(client, prompt, style="natural")
    default = _revised(client, prompt)
    assert vivid != natural
    assert vivid.startswith(prompt) and natural.startswith(prompt)
    assert default == vivid  # vivid is dall-e-3's default style
    assert _revised(client, prompt, style="vivid") == vivid  # deterministic


def test_verbatim_prefix_opts_out(client: openai.OpenAI) -> None:
    revised = _revised(client, f"{VERBATIM_PREFIX} a plain blue square", style="vivid")
    assert revised == "a plain blue square"


def test_revised_prompt_on_url_response(client: openai.OpenAI) -> None:
    result = client.images.generate(model="dall-e-3", prompt="a kite", extra_body=FAST)
    item = result.data[0]
    assert item.url is not None and item.b64_json is None
    assert isinstance(item.revised_prompt, str) and item.revised_prompt.startswith("a kite")


# --- validation ------------------------------------------------------------------------


def _not_one_of(value: str, allowed: list[str], param: str) -> str:
    return f"{value!r} is not one of {allowed!r} - {param!r}"


DALLE2_SIZES = ["256x256", "512x512", "1024x1024"]
DALLE2_SIZE_MESSAGE = ("The size is not supported by this model. Supported sizes for "
                       "dall-e-2: 256x256, 512x512, 1024x1024.")
DALLE3_SIZE_MESSAGE = ("The size is not supported by this model. Supported sizes for "
                       "dall-e-3: 1024x1024, 1792x1024, 1024x1792.")
DALLE3_SIZES = ["1024x1024", "1792x1024", "1024x1792"]

VALIDATION_CASES: list[tuple[str, dict[str, Any], str | None, str | None, str]] = [
    # dall-e-2
    ("dall-e-2", {"prompt": "a" * 1001}, "prompt", "string_above_max_length",
     "Invalid 'prompt': string too long. Expected a string with maximum length 1000, "
     "but got a string with length 1001 instead."),
    ("dall-e-2", {"prompt": ""}, "prompt", "empty_string",
     "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
     "but got an empty string instead."),
    ("dall-e-2", {"n": 0}, "n", None, "0 is less than the minimum of 1 - 'n'"),
    ("dall-e-2", {"n": 11}, "n", None, "11 is greater than the maximum of 10 - 'n'"),
    ("dall-e-2", {"size": "1792x1024"}, "size", "invalid_size",
     DALLE2_SIZE_MESSAGE),
    ("dall-e-2", {"size": "1024x1792"}, "size", "invalid_size",
     DALLE2_SIZE_MESSAGE),
    ("dall-e-2", {"size": "256\u00d7256"}, "size", "invalid_size",
     _not_one_of("256\u00d7256", DALLE2_SIZES, "size")),
    ("dall-e-2", {"quality": "hd"}, "quality", "invalid_value",
     _not_one_of("hd", ["standard"], "quality")),
    ("dall-e-2", {"style": "bold"}, "style", "invalid_value",
     _not_one_of("bold", ["vivid", "natural"], "style")),
    ("dall-e-2", {"response_format": "png"}, "response_format", "invalid_value",
     _not_one_of("png", ["url", "b64_json"], "response_format")),
    # dall-e-3
    ("dall-e-3", {"prompt": "a" * 4001}, "prompt", "string_above_max_length",
     "Invalid 'prompt': string too long. Expected a string with maximum length 4000, "
     "but got a string with length 4001 instead."),
    ("dall-e-3", {"n": 2}, "n", None, "You must provide n=1 for this model."),
    ("dall-e-3", {"size": "256x256"}, "size", "invalid_size",
     DALLE3_SIZE_MESSAGE),
    ("dall-e-3", {"size": "512x512"}, "size", "invalid_size",
     DALLE3_SIZE_MESSAGE),
    ("dall-e-3", {"size": "big"}, "size", "invalid_size",
     _not_one_of("big", DALLE3_SIZES, "size")),
    ("dall-e-3", {"quality": "ultra"}, "quality", "invalid_value",
     _not_one_of("ultra", ["standard", "hd"], "quality")),
    ("dall-e-3", {"style": "bold"}, "style", "invalid_value",
     _not_one_of("bold", ["vivid", "natural"], "style")),
    ("dall-e-3", {"response_format": "png"}, "response_format", "invalid_value",
     _not_one_of("png", ["url", "b64_json"], "response_format")),
    # common
    ("dall-e-2", {"user": "u" * 257}, "user", "string_above_max_length",
     "Invalid 'user': string too long. Expected a string with maximum length 256, "
     "but got a string with length 257 instead."),
]


@pytest.mark.parametrize(("model", "fields", "param", "code", "message"), VALIDATION_CASES,
                         ids=[f"{c[0]}-{next(iter(c[1]))}-{c[2]}-{i}"
                              for i, c in enumerate(VALIDATION_CASES)])
def test_validation(client: openai.OpenAI, model: str, fields: dict[str, Any],
                    param: str | None, code: str | None, message: str) -> None:
    kwargs = {"prompt": "a cat", **fields}
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model=model, extra_body=FAST, **kwargs)
    assert_bad_request(info.value, param, code, message)


EXTENSION_CASES: list[tuple[dict[str, Any], str, str, str]] = [
    ({"seed": -1}, "seed", "integer_below_min_value",
     "Invalid 'seed': integer below minimum value. Expected a value >= 0, "
     "but got -1 instead."),
    ({"seed": 2**32}, "seed", "integer_above_max_value",
     "Invalid 'seed': integer above maximum value. Expected a value <= 4294967295, "
     "but got 4294967296 instead."),
    ({"seed": 2**32 - 1, "n": 2}, "seed", "integer_above_max_value",
     "Invalid 'seed': integer above maximum value. Expected a value <= 4294967294, "
     "but got 4294967295 instead."),
    ({"num_inference_steps": 0}, "num_inference_steps", "integer_below_min_value",
     "Invalid 'num_inference_steps': integer below minimum value. Expected a value >= 1, "
     "but got 0 instead."),
    ({"num_inference_steps": 201}, "num_inference_steps", "integer_above_max_value",
     "Invalid 'num_inference_steps': integer above maximum value. Expected a value <= 200, "
     "but got 201 instead."),
    ({"guidance_scale": -0.5}, "guidance_scale", "invalid_value",
     "Invalid 'guidance_scale': expected a number between 0 and 30, but got -0.5 instead."),
    ({"guidance_scale": 31}, "guidance_scale", "invalid_value",
     "Invalid 'guidance_scale': expected a number between 0 and 30, but got 31 instead."),
    ({"negative_prompt": "b" * 1001}, "negative_prompt", "string_above_max_length",
     "Invalid 'negative_prompt': string too long. Expected a string with maximum length "
     "1000, but got a string with length 1001 instead."),
    ({"seed": "7"}, "seed", "invalid_type",
     "Invalid type for 'seed': expected an integer, but got a string instead."),
    ({"num_inference_steps": 2.5}, "num_inference_steps", "invalid_type",
     "Invalid type for 'num_inference_steps': expected an integer, but got a number instead."),
    ({"guidance_scale": "high"}, "guidance_scale", "invalid_type",
     "Invalid type for 'guidance_scale': expected a number, but got a string instead."),
    ({"steps": 2}, "steps", "unknown_parameter", "Unknown parameter: 'steps'."),
]


@pytest.mark.parametrize(("extra", "param", "code", "message"), EXTENSION_CASES,
                         ids=[f"{next(iter(c[0]))}-{c[2]}-{i}"
                              for i, c in enumerate(EXTENSION_CASES)])
def test_extension_validation(client: openai.OpenAI, extra: dict[str, Any], param: str,
                              code: str, message: str) -> None:
    body = {"num_inference_steps": 2, **extra}
    n = body.pop("n", 1)
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model="dall-e-2", prompt="a cat", size="256x256", n=n,
                               extra_body=body)
    assert_bad_request(info.value, param, code, message)


@pytest.mark.parametrize(("model", "length"), [("dall-e-2", 1000), ("dall-e-3", 4000)])
def test_longest_prompt_accepted(client: openai.OpenAI, model: str, length: int) -> None:
    size = "256x256" if model == "dall-e-2" else "1024x1024"
    result = client.images.generate(model=model, prompt="a" * length, size=size,
                                    response_format="b64_json", extra_body=FAST)
    assert len(result.data) == 1


def test_dall_e_3_hd_accepted(client: openai.OpenAI) -> None:
    result = client.images.generate(model="dall-e-3", prompt="a cat", quality="hd",
                                    response_format="b64_json", extra_body=FAST)
    assert png_size(b64_png(result.data[0])) == (1024, 1024)


def test_validation_is_not_retried_as_server_error(server: LiveServer) -> None:
    """A bad request fails once with 400, even with the SDK's default retries on."""
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY) as sdk, \
            pytest.raises(openai.BadRequestError):
        sdk.images.generate(model="dall-e-3", prompt="x", n=2)


# --- restart -------------------------------------------------------------------------


def test_links_survive_restart(tiny_models: dict[str, Path],
                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """No signing secret configured: the key persisted in storage_dir signs across restarts."""
    tmp = tmp_path_factory.mktemp("e2e-restart")
    storage = tmp / "images"
    args = ["--model", f"tiny-sd={tiny_models['sd']}"]
    first = start_server(args, tmp, storage_dir=storage)
    try:
        with openai.OpenAI(base_url=f"{first.base_url}/v1", api_key="unused",
                           max_retries=0) as sdk:
            result = sdk.images.generate(model="dall-e-2", prompt="a barn", size="256x256",
                                         extra_body=FAST)
        url = result.data[0].url
        assert url is not None
        before = httpx.get(url, timeout=30)
        assert before.status_code == 200
    finally:
        first.stop()
    assert (storage / ".signing-key").is_file()

    second = start_server(args, tmp, storage_dir=storage)
    try:
        parts = urlsplit(url)
        response = httpx.get(f"{second.base_url}{parts.path}?{parts.query}", timeout=30)
        assert response.status_code == 200
        assert response.content == before.content
        assert png_size(response.content) == (256, 256)
    finally:
        second.stop()


def test_an_edit_through_the_diffusers_inpainting_variant_keeps_the_unmasked_pixels(
    client: openai.OpenAI,
) -> None:
    red = Image.new("RGB", (256, 256), (200, 30, 30))
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 256, 128))
    files = []
    for picture in (red, mask):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        files.append(buffer.getvalue())
    result = client.images.edit(
        model="tiny-sd", image=("red.png", files[0], "image/png"),
        mask=("mask.png", files[1], "image/png"), prompt="a red cube", size="512x512",
        response_format="b64_json", extra_body=FAST)
    with Image.open(io.BytesIO(b64_png(result.data[0]))) as edited:
        pixels = np.asarray(edited.convert("RGB")).astype(int)
    assert pixels.shape == (512, 512, 3)
    assert (pixels[270:] == (200, 30, 30)).all()  # kept, to the pixel
    assert np.abs(pixels[:240] - (200, 30, 30)).mean() > 10  # redrawn by the model


def test_markup_json_and_self_masking_edits_through_the_live_server(
    client: openai.OpenAI, server: LiveServer,
) -> None:
    def png_bytes(picture: Image.Image) -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    red = Image.new("RGB", (256, 256), (200, 30, 30))
    # A transparent image without a mask: its clear left half is redrawn, the rest kept.
    half_clear = Image.new("RGBA", (256, 256), (200, 30, 30, 255))
    half_clear.paste((0, 0, 0, 0), (0, 0, 128, 256))
    kept = client.images.edit(model="tiny-sd", image=("h.png", png_bytes(half_clear),
                                                      "image/png"),
                              prompt="a red cube", size="256x256", response_format="b64_json",
                              extra_body=FAST)
    with Image.open(io.BytesIO(b64_png(kept.data[0]))) as edited:
        pixels = np.asarray(edited.convert("RGB")).astype(int)
    assert (pixels[:, 136:] == (200, 30, 30)).all()
    # markup: strokes drawn over the image guide an image-to-image edit.
    markup = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    markup.paste((20, 40, 220, 255), (0, 0, 128, 256))
    guided = client.images.edit(model="gpt-image-2.5-flare",
                                image=("r.png", png_bytes(red), "image/png"),
                                markup=("m.png", png_bytes(markup), "image/png"),
                                prompt="a red cube", size="256x256", extra_body=FAST)
    assert guided.size == "256x256" and guided.data
    # The JSON form gateways send, with a data URL.
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(red)).decode()
    response = httpx.post(f"{server.base_url}/v1/images/edits", timeout=120,
                          headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"model": "gpt-image-2", "prompt": "a red cube",
                                "images": [{"image_url": data_url}], "size": "512x512",
                                "num_inference_steps": 2})
    assert response.status_code == 200, response.text
    assert response.json()["size"] == "512x512"

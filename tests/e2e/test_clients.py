"""The requests of the clients people point at OpenAI-compatible image servers, sent to a
live ``diffuserve serve`` exactly as each client sends them, checking what each reads back.

Shapes from the clients' own sources (docs/CLIENTS.md names the files; the reference table
is /work/shared/reference/CLIENTS_AND_PROVENANCE.md in the project's notes): JSON bodies
and multipart parts with the field names, string values and file names the clients use.
The server is the one docs/CLIENTS.md describes: one model, one key, ``--cors-origins``
unset; OpenAI's names point at the model, as they do by default.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.support.live_server import LiveServer, start_server

pytestmark = pytest.mark.e2e

API_KEY = "sk-clients-0123456789abcdef"
#: The server of these tests (docs/CLIENTS.md quotes it): two denoising steps keep the
#: tiny model quick whatever the quality asked for.
MODELS_TOML = '[[models]]\nname = "tiny"\nsource = "{source}"\nsteps = 2\n'
#: Open WebUI's fixed model names for its "openai" engine (``get_models``).
OPEN_WEBUI_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1.5")
#: Open WebUI's default ``IMAGE_SIZE``.
OPEN_WEBUI_SIZE = "512x512"


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("clients")
    models = tmp / "models.toml"
    models.write_text(MODELS_TOML.format(source=tiny_models["sd"]))
    live = start_server(["--models-file", str(models), "--api-key", API_KEY], tmp)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    """Every client sends the key as a bearer token."""
    with httpx.Client(base_url=f"{server.base_url}/v1", timeout=120,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        yield client


def png(size: tuple[int, int], mode: str = "RGB", fill: Any = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, fill).save(buffer, format="PNG")
    return buffer.getvalue()


def openai_mask(size: tuple[int, int]) -> bytes:
    """OpenAI's mask: the top half fully transparent (to be redrawn)."""
    image = Image.new("RGBA", size, (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0], size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def picture(b64: str) -> Image.Image:
    data = base64.b64decode(b64, validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(data))


def error_of(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# --- Open WebUI (backend/open_webui/routers/images.py) ---------------------------------


def open_webui_generation(model: str, size: str = OPEN_WEBUI_SIZE) -> dict[str, Any]:
    """``image_generations``: ``response_format`` only when the configured model does not
    match ``IMAGE_URL_RESPONSE_MODELS_REGEX_PATTERN`` (``^gpt-image``); the admin's
    ``IMAGES_OPENAI_API_PARAMS`` (here diffuserve's ``num_inference_steps``) merged last."""
    body: dict[str, Any] = {"model": model, "prompt": "a lighthouse at dusk", "n": 1,
                            "size": size}
    if not model.startswith("gpt-image"):
        body["response_format"] = "b64_json"
    return {**body, "num_inference_steps": 2}


def open_webui_images(body: dict[str, Any]) -> list[Image.Image]:
    """What Open WebUI reads: ``data[i]`` with ``b64_json`` (or a ``url`` it fetches)."""
    return [picture(item["b64_json"]) for item in body["data"]]


def test_open_webui_default_generation_is_answered(http: httpx.Client) -> None:
    response = http.post("/images/generations", json=open_webui_generation("dall-e-2"))

    assert response.status_code == 200, response.text
    (image,) = open_webui_images(response.json())
    assert image.size == (512, 512)


@pytest.mark.parametrize("model", OPEN_WEBUI_MODELS)
def test_open_webui_every_fixed_model_name_at_1024(http: httpx.Client, model: str) -> None:
    response = http.post("/images/generations",
                         json=open_webui_generation(model, size="1024x1024"))

    assert response.status_code == 200, response.text
    (image,) = open_webui_images(response.json())
    assert image.size == (1024, 1024)


@pytest.mark.parametrize("model, sizes", [
    ("dall-e-3", "1024x1024, 1792x1024, 1024x1792"),
    ("gpt-image-1", "auto, 1024x1024, 1536x1024, 1024x1536"),
    ("gpt-image-1.5", "auto, 1024x1024, 1536x1024, 1024x1536"),
])
def test_open_webui_default_size_with_a_name_that_lacks_it_says_which_sizes_it_takes(
    http: httpx.Client, server: LiveServer, model: str, sizes: str
) -> None:
    response = http.post("/images/generations", json=open_webui_generation(model))

    error = error_of(response)
    assert (error["code"], error["param"]) == ("invalid_size", "size")
    assert error["message"] == (f"The size is not supported by this model. Supported sizes "
                                f"for {model}: {sizes}.")
    # Open WebUI shows its user "Bad Request" alone: the operator's log says why.
    line = access_log_line(server, response.headers["x-request-id"])
    assert (line["status"], line["error_code"], line["error_param"]) == (
        400, "invalid_size", "size")
    assert line["error_message"] == error["message"]


def access_log_line(server: LiveServer, request_id: str) -> dict[str, Any]:
    """The request's access-log line: written once the answer has been sent, so it may
    reach the log a moment after the client has the answer."""
    deadline = time.monotonic() + 30
    while True:
        lines = [json.loads(line) for line in server.log().splitlines()
                 if request_id in line and '"message": "request"' in line]
        if lines:
            (line,) = lines
            return line
        assert time.monotonic() < deadline, f"no access-log line for {request_id}"
        time.sleep(0.05)


def open_webui_edit(model: str, images: list[bytes]) -> dict[str, Any]:
    """``image_edits`` (aiohttp ``FormData``): ``n`` and ``size`` only when set; one image
    as the part ``image``, several as ``image[]``, each named ``<uuid>.png``."""
    data = {"model": model, "prompt": "make it blue", "n": "1"}
    if not model.startswith("gpt-image"):
        data["response_format"] = "b64_json"
    name = "image" if len(images) == 1 else "image[]"
    files = [(name, (f"{uuid.uuid4()}.png", image, "image/png")) for image in images]
    return {"data": data, "files": files}


def test_open_webui_edit_of_one_image(http: httpx.Client) -> None:
    response = http.post("/images/edits", **open_webui_edit("dall-e-2", [png((256, 256))]))

    assert response.status_code == 200, response.text
    (image,) = open_webui_images(response.json())
    assert image.size == (1024, 1024)  # dall-e-2's default size


def test_open_webui_edit_of_several_images_is_refused_naming_the_limit(
    http: httpx.Client,
) -> None:
    response = http.post("/images/edits", **open_webui_edit(
        "gpt-image-1", [png((64, 64)), png((64, 64))]))

    error = error_of(response)
    assert (error["code"], error["param"]) == ("too_many_images", "image")
    assert "one image at a time" in error["message"]


# --- LiteLLM (llms/openai/image_edit/transformation.py, image_generation/…) ------------


def test_litellm_edit_sends_every_image_as_image_brackets_with_a_mask(
    http: httpx.Client,
) -> None:
    # model "openai/gpt-image-1" in LiteLLM's config reaches the server as gpt-image-1;
    # every image as image[] (even one), the first mask as mask, values as form strings.
    response = http.post("/images/edits", data={
        "model": "gpt-image-1", "prompt": "a green apple", "n": "1", "size": "1024x1024",
        "quality": "low", "response_format": "b64_json", "background": "opaque",
        "user": "litellm-user",
    }, files=[("image[]", ("image.png", png((256, 256)), "image/png")),
              ("mask", ("mask.png", openai_mask((256, 256)), "image/png"))])

    assert response.status_code == 200, response.text
    body = response.json()
    # LiteLLM builds ImageResponse(**json): every field is read.
    assert picture(body["data"][0]["b64_json"]).size == (1024, 1024)
    assert (body["size"], body["quality"], body["output_format"]) == (
        "1024x1024", "low", "png")
    assert body["usage"]["input_tokens_details"]["image_tokens"] > 0
    assert body["safety_identifier"] == "litellm-user"
    assert isinstance(body["created"], int)


def test_litellm_drop_params_forwarded_on_an_edit_is_an_unknown_parameter(
    http: httpx.Client,
) -> None:
    # With drop_params set on the model, LiteLLM forwards it as a form field of edits.
    response = http.post("/images/edits", data={
        "model": "gpt-image-1", "prompt": "x", "drop_params": "True",
    }, files=[("image[]", ("image.png", png((64, 64)), "image/png"))])

    error = error_of(response)
    assert (error["code"], error["param"]) == ("unknown_parameter", "drop_params")


def test_litellm_generation_through_its_openai_client(server: LiveServer) -> None:
    # LiteLLM calls openai-python's images.generate with its supported parameters only.
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)
    with client:
        result = client.images.generate(model="dall-e-2", prompt="a cat", n=2,
                                        size="256x256", response_format="b64_json",
                                        user="litellm-user")
    assert [picture(item.b64_json or "").size for item in result.data or []] == [
        (256, 256)] * 2


# --- LibreChat (api/app/clients/tools/structured/OpenAIImageTools.js) -----------------


def test_librechat_generation_with_auto_fields_and_no_response_format(
    http: httpx.Client,
) -> None:
    response = http.post("/images/generations", json={
        "model": "gpt-image-1", "prompt": "a watercolour fox", "n": 1,
        "background": "auto", "output_format": "png", "quality": "auto", "size": "auto"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert picture(body["data"][0]["b64_json"]).size == (1024, 1024)  # it reads this only
    assert (body["size"], body["quality"], body["background"]) == (
        "1024x1024", "medium", "opaque")  # resolved, never auto


def test_librechat_with_a_dall_e_name_is_refused_as_openai_refuses_it(
    http: httpx.Client,
) -> None:
    # IMAGE_GEN_OAI_MODEL=dall-e-2, as some guides suggest: its GPT-image fields are not
    # dall-e-2's; size auto is the first one checked.
    response = http.post("/images/generations", json={
        "model": "dall-e-2", "prompt": "a fox", "n": 1, "background": "auto",
        "output_format": "png", "quality": "auto", "size": "auto"})

    error = error_of(response)
    assert (error["code"], error["param"]) == ("invalid_size", "size")
    assert error["message"].endswith("Supported sizes for dall-e-2: 256x256, 512x512, "
                                     "1024x1024.")


def test_librechat_edit_sends_image_brackets_with_auto_quality_and_size(
    http: httpx.Client,
) -> None:
    # axios + form-data: model, prompt, quality and size 'auto', one image[] per file with
    # the file name and type from its storage.
    response = http.post("/images/edits", data={
        "model": "gpt-image-1", "prompt": "add a hat", "quality": "auto", "size": "auto",
    }, files=[("image[]", ("cat-photo.png", png((96, 64)), "image/png"))])

    assert response.status_code == 200, response.text
    body = response.json()
    # size auto: the supported size nearest the image's shape (3:2 → 1536x1024).
    assert picture(body["data"][0]["b64_json"]).size == (1536, 1024)
    assert body["size"] == "1536x1024"


# --- n8n (nodes-langchain/…/OpenAi/v2/actions/image/edit.operation.ts) ----------------


def test_n8n_gpt_image_edit_with_string_n_fidelity_and_background(http: httpx.Client) -> None:
    response = http.post("/images/edits", data={
        "prompt": "make it night", "model": "gpt-image-1", "n": "1", "size": "1024x1024",
        "user": "n8n-workflow", "background": "opaque", "input_fidelity": "high",
        "quality": "high",
    }, files=[("image[]", ("data.png", png((128, 128)), "image/png")),
              ("mask", ("data.png", openai_mask((128, 128)), "image/png"))])

    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert picture(item["b64_json"]).size == (1024, 1024)  # n8n turns it into a binary


def test_n8n_dall_e_2_edit_answers_a_url_it_can_fetch(http: httpx.Client) -> None:
    response = http.post("/images/edits", data={
        "prompt": "make it night", "model": "dall-e-2", "n": "1", "size": "256x256",
        "response_format": "url",
    }, files=[("image", ("data.png", png((256, 256)), "image/png"))])

    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    fetched = httpx.get(item["url"])  # a signed link: no key needed
    assert fetched.status_code == 200
    assert Image.open(io.BytesIO(fetched.content)).size == (256, 256)


def test_n8n_quality_standard_for_gpt_image_1_is_refused_as_openai_does(
    http: httpx.Client,
) -> None:
    response = http.post("/images/edits", data={
        "prompt": "x", "model": "gpt-image-1", "n": "1", "quality": "standard",
    }, files=[("image[]", ("data.png", png((64, 64)), "image/png"))])

    error = error_of(response)
    assert (error["code"], error["param"]) == ("invalid_value", "quality")


# --- the SDKs and curl ----------------------------------------------------------------


def test_openai_python_edit_with_its_newer_fields(server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)
    with client:
        result = client.images.edit(model="gpt-image-2", image=("a.png", png((64, 64)),
                                                                "image/png"),
                                    prompt="x", complexity="low",
                                    safety_identifier="hash-of-user")
        with pytest.raises(openai.BadRequestError) as refused:
            client.images.edit(model="gpt-image-2", image=("a.png", png((64, 64)),
                                                           "image/png"),
                               prompt="x", svg={"model": "m", "reasoning": {"effort": "low"}})
    assert result.safety_identifier == "hash-of-user"
    assert (refused.value.param, refused.value.code) == ("svg", "invalid_value")


def test_curl_edit_from_the_readme(server: LiveServer, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    image = tmp_path / "apple.png"
    image.write_bytes(png((64, 64)))
    done = subprocess.run(
        ["curl", "-sS", f"{server.base_url}/v1/images/edits",
         "-H", f"Authorization: Bearer {API_KEY}",
         "-F", "model=gpt-image-2", "-F", "prompt=a green apple", "-F", f"image=@{image}"],
        capture_output=True, text=True, timeout=120, check=True)

    body = json.loads(done.stdout)
    assert picture(body["data"][0]["b64_json"]).size == (64, 64)  # size auto: the input's

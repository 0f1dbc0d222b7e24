"""Edits and variations through the official SDK: uploads, masks kept to the pixel, JSON
edits, variations, streamed edits, limits."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from diffuserve.engine.local.engine import LocalEngine
from diffuserve.engine.types import GenerationParams, ModelStatus, StepCallback, TaskKind
from diffuserve.protocol import edits
from tests.support.clients import AUTH, KEY, make_client, sdk_for
from tests.support.fakes import FakeBackend

RED, BLUE = (200, 30, 30), (20, 40, 220)
#: Most levels the server's watermark moves a drawn pixel's channel (on flat colour it
#: moves them a few; docs/PROVENANCE.md): the drawing is BLUE within it, never RED.
WATERMARK_LEVELS = 16


class EditingBackend(FakeBackend):
    """Edits and variations paint everything blue; it records what it was given."""

    tasks = frozenset(TaskKind)

    def generate(self, params: GenerationParams, on_step: StepCallback | None = None
                 ) -> list[Image.Image]:
        self.calls.append(params)
        if on_step is not None:
            for step in range(1, params.num_inference_steps + 1):
                on_step(step, params.num_inference_steps,
                        lambda index: Image.new("RGB", (params.width, params.height), BLUE))
        return [Image.new("RGB", (params.width, params.height), BLUE) for _ in params.seeds]


@pytest.fixture
def backend() -> EditingBackend:
    return EditingBackend()


@pytest.fixture
def client(tmp_path: Path, backend: EditingBackend) -> TestClient:
    return make_client(tmp_path, backend, auto_aliases=True, aliases=())



def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def picture(b64: str | None) -> np.ndarray:
    assert b64 is not None
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def drawn_as(pixels: np.ndarray, colour: tuple[int, int, int]) -> bool:
    """The model's flat ``colour``, as the watermark leaves it."""
    off = np.abs(pixels - np.array(colour))
    return bool(off.max() <= WATERMARK_LEVELS and off.mean() <= 2)


def top_clear_mask(size: int = 256) -> bytes:
    mask = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size, size // 2))
    return png(mask)


def test_an_edit_redraws_the_masked_area_and_keeps_the_rest_to_the_pixel(
    client: TestClient, backend: EditingBackend
) -> None:
    original = png(Image.new("RGB", (256, 256), RED))
    with client:
        result = sdk_for(client).images.edit(
            model="gpt-image-2", image=("a.png", original, "image/png"),
            mask=("m.png", top_clear_mask(), "image/png"), prompt="a blue sky",
            size="512x512")
    pixels = picture(result.data[0].b64_json if result.data else None)
    assert pixels.shape == (512, 512, 3)
    assert (pixels[300:] == RED).all()  # unmasked: the input's own pixels, to the bit
    assert drawn_as(pixels[:240], BLUE)  # masked: what the model drew (watermarked)
    call = backend.calls[0]
    assert call.mask is not None and call.image is not None and call.strength == 1.0
    assert (result.size, result.usage.input_tokens_details.image_tokens) == ("512x512", 85)


def test_an_edit_of_a_transparent_image_without_a_mask_redraws_its_clear_part(
    client: TestClient,
) -> None:
    image = Image.new("RGBA", (256, 256), (*RED, 255))
    image.paste((0, 0, 0, 0), (0, 0, 128, 256))
    with client:
        result = sdk_for(client).images.edit(image=("a.png", png(image), "image/png"),
                                         prompt="fill it", response_format="b64_json",
                                         size="256x256")
    pixels = picture(result.data[0].b64_json if result.data else None)
    assert drawn_as(pixels[:, :120], BLUE) and (pixels[:, 136:] == RED).all()


def test_two_images_for_a_model_that_takes_one_is_a_clear_400(client: TestClient) -> None:
    image = png(Image.new("RGB", (64, 64), RED))
    with client, pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.edit(model="gpt-image-2", image=[("a.png", image, "image/png"),
                                                            ("b.png", image, "image/png")],
                                prompt="merge them")
    assert (caught.value.param, caught.value.code) == ("image", "too_many_images")
    assert "one image at a time" in caught.value.message


def test_a_json_edit_with_a_data_url(client: TestClient, backend: EditingBackend) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(
        png(Image.new("RGB", (300, 200), RED))).decode()
    with client:
        response = client.post("/v1/images/edits", headers=AUTH, json={
            "model": "gpt-image-2", "prompt": "bluer", "images": [{"image_url": data_url}],
            "input_fidelity": "high"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == "304x192"  # size=auto: the input's, to the nearest multiples of 16
    assert backend.calls[0].strength == 0.5  # high fidelity, no mask


@pytest.mark.parametrize("model", [["gpt-image-2"], {"name": "gpt-image-2"}, 5])
def test_a_json_edits_model_that_is_no_string_is_a_400(client: TestClient,
                                                        model: object) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(
        png(Image.new("RGB", (64, 64), RED))).decode()
    with client:
        response = client.post("/v1/images/edits", headers=AUTH, json={
            "model": model, "prompt": "x", "images": [{"image_url": data_url}]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "invalid_type")


def test_variations_draw_n_distinct_images_without_a_prompt(
    client: TestClient, backend: EditingBackend
) -> None:
    # openai-python marks the call deprecated (upstream retired the endpoint); served here.
    with client, pytest.warns(DeprecationWarning, match="^deprecated$"):
        result = sdk_for(client).images.create_variation(
            image=("a.png", png(Image.new("RGB", (256, 256), RED)), "image/png"), n=2,
            size="256x256", response_format="b64_json")
    assert len(result.data) == 2
    call = backend.calls[0]
    assert (call.prompt, call.strength, len(call.seeds)) == ("", 0.6, 2)
    assert call.seeds[0] != call.seeds[1]


def test_a_streamed_edit_sends_image_edit_events(client: TestClient) -> None:
    with client:
        events = list(sdk_for(client).images.edit(
            model="gpt-image-2", image=("a.png", png(Image.new("RGB", (64, 64), RED)),
                                        "image/png"),
            prompt="x", stream=True, partial_images=2, extra_body={"num_inference_steps": 6}))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.partial_image",
                                        "image_edit.completed"]


def test_completed_edit_events_carry_the_effective_safety_identifier(
    client: TestClient,
) -> None:
    with client:
        events = list(sdk_for(client).images.edit(
            model="gpt-image-2", image=("a.png", png(Image.new("RGB", (64, 64), RED)),
                                        "image/png"),
            prompt="x", stream=True, user="bob", extra_body={"num_inference_steps": 2}))
        response = sdk_for(client).images.edit(
            model="gpt-image-2", image=("a.png", png(Image.new("RGB", (64, 64), RED)),
                                        "image/png"),
            prompt="x", user="bob", safety_identifier="hash-of-bob")
    assert [(e.type, e.safety_identifier) for e in events] == [("image_edit.completed", "bob")]
    assert response.safety_identifier == "hash-of-bob"


def test_edits_take_complexity_from_the_sdk_as_generations_do(
    client: TestClient, backend: EditingBackend
) -> None:
    image = ("a.png", png(Image.new("RGB", (64, 64), RED)), "image/png")
    with client:
        for complexity in ("low", "high"):
            sdk_for(client).images.edit(model="gpt-image-2", image=image, prompt="x",
                                        complexity=complexity)
    # The model's 10 steps, scaled as on generations (service/planning.py).
    assert [call.num_inference_steps for call in backend.calls] == [8, 12]


@pytest.mark.parametrize("model, fields, param, code", [
    ("gpt-image-2", {"svg": {"model": "m", "reasoning": {"effort": "high"}}}, "svg",
     "invalid_value"),
    ("gpt-image-2", {"frame_count": 4}, "frame_count", "invalid_value"),
    ("gpt-image-2", {"frame_duration_ms": 200}, "frame_duration_ms", "invalid_value"),
    ("gpt-image-2", {"output_format": "svg", "svg": {"model": "m"}}, "output_format",
     "unsupported_value"),
    ("dall-e-2", {"frame_count": 4}, "frame_count", "unknown_parameter"),
])
def test_the_sdks_gif_and_svg_fields_get_the_400_generations_give(
    client: TestClient, backend: EditingBackend, model: str, fields: dict[str, object],
    param: str, code: str,
) -> None:
    image = ("a.png", png(Image.new("RGB", (64, 64), RED)), "image/png")
    with client:
        sdk = sdk_for(client)
        with pytest.raises(openai.BadRequestError) as edited:
            sdk.images.edit(model=model, image=image, prompt="x", **fields)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as generated:
            sdk.images.generate(model=model, prompt="x", **fields)  # type: ignore[arg-type]
    assert (edited.value.param, edited.value.code) == (param, code)
    assert edited.value.message == generated.value.message
    assert backend.calls == []


def test_a_model_that_cannot_edit_says_so(tmp_path: Path) -> None:
    with make_client(tmp_path, FakeBackend(), auto_aliases=True, aliases=()) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.edit(image=("a.png", png(Image.new("RGB", (64, 64), RED)),
                                       "image/png"), prompt="x")
    assert caught.value.code == "unsupported_value"


@pytest.mark.parametrize("body, param, code", [
    ({"files": {"image": ("a.png", b"plain text", "image/png")}, "data": {"prompt": "x"}},
     "image", "invalid_image"),
    ({"files": {"image": ("a.png", b"x", "image/png")}, "data": {"prompt": "x", "n": "many"}},
     "n", "invalid_type"),
    ({"data": {"prompt": "x"}}, "Content-Type", "invalid_value"),
])
def test_malformed_uploads_get_the_envelope_never_a_422_or_500(
    client: TestClient, body: dict[str, object], param: str, code: str
) -> None:
    with client:
        response = client.post("/v1/images/edits", headers=AUTH, **body)  # type: ignore[arg-type]
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)


def test_uploads_over_the_limit_are_413(tmp_path: Path, backend: EditingBackend) -> None:
    with make_client(tmp_path, backend, max_upload_bytes=1 << 20) as client:
        response = client.post("/v1/images/edits", headers=AUTH,
                               files={"image": ("a.png", b"x" * (2 << 20), "image/png")},
                               data={"prompt": "x"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def serve_once(body: bytes) -> tuple[str, http.server.HTTPServer, threading.Thread]:
    """A loopback HTTP server that answers one GET with ``body`` (a PNG)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}/red.png", server, thread


def remote_edit(client: TestClient, url: str) -> httpx.Response:
    return client.post("/v1/images/edits", headers=AUTH, json={
        "model": "gpt-image-2", "prompt": "bluer", "images": [{"image_url": url}]})


def test_remote_image_urls_are_refused_unless_the_operator_allows_them(
    client: TestClient,
) -> None:
    with client:
        response = remote_edit(client, "https://images.example.com/a.png")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("images[0]", "invalid_image_url")


def test_allowed_remote_urls_are_fetched_but_never_from_private_addresses(
    tmp_path: Path, backend: EditingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, server, served = serve_once(png(Image.new("RGB", (64, 64), RED)))
    with make_client(tmp_path, backend, auto_aliases=True, aliases=(),
                     allow_remote_image_urls=True) as client:
        refused = remote_edit(client, url)  # 127.0.0.1 is not a public address
        assert refused.status_code == 400
        assert "private address" in refused.json()["error"]["message"]
        # Treating loopback as public for this test, the image is fetched and edited.
        monkeypatch.setattr("diffuserve.api.remote.is_public", lambda address: True)
        fetched = remote_edit(client, url)
    served.join(timeout=10)
    server.server_close()
    assert fetched.status_code == 200, fetched.text
    assert backend.calls[-1].image is not None
    assert backend.calls[-1].image.getpixel((0, 0)) == RED


# --- several images: the served model's own limit -------------------------------------

GREEN = (30, 200, 30)


def three_images() -> list[tuple[str, bytes, str]]:
    return [(f"{index}.png", png(Image.new("RGB", (256, 256), colour)), "image/png")
            for index, colour in enumerate((RED, GREEN, BLUE))]


def test_several_images_reach_a_model_that_takes_them_the_mask_on_the_first(
    tmp_path: Path, backend: EditingBackend
) -> None:
    backend.max_input_images = 3
    with make_client(tmp_path, backend, auto_aliases=True, aliases=()) as client:
        result = sdk_for(client).images.edit(
            model="gpt-image-2", image=three_images(), prompt="the three together",
            mask=("m.png", top_clear_mask(), "image/png"), size="256x256")
    (call,) = backend.calls
    assert call.image is not None and call.image.getpixel((0, 0)) == RED
    assert [reference.getpixel((0, 0)) for reference in call.references] == [GREEN, BLUE]
    assert call.mask is not None and call.mask.size == (256, 256)
    pixels = picture(result.data[0].b64_json if result.data else None)
    assert (pixels[140:] == RED).all()  # the first image's pixels kept where unmasked
    assert result.usage is not None
    assert result.usage.input_tokens_details.image_tokens == 3 * 85  # each image counts


def test_more_images_than_the_model_takes_are_refused_with_its_limit_before_decoding(
    tmp_path: Path, backend: EditingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[object] = []
    monkeypatch.setattr(edits, "decode_probed", decoded.append)
    backend.max_input_images = 2
    with make_client(tmp_path, backend, auto_aliases=True, aliases=()) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.edit(model="gpt-image-1", image=three_images(), prompt="x")
    assert (caught.value.param, caught.value.code) == ("image", "too_many_images")
    assert "'fake' takes at most 2 images in one edit; 3 were sent" in caught.value.message
    assert decoded == [] and backend.calls == []


def test_the_names_own_limit_comes_first(tmp_path: Path, backend: EditingBackend) -> None:
    backend.max_input_images = 10
    with make_client(tmp_path, backend, auto_aliases=True, aliases=()) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.edit(model="dall-e-2", image=[
            ("a.png", png(Image.new("RGB", (64, 64), RED)), "image/png")] * 2, prompt="x")
    assert caught.value.code == "too_many_images"
    assert "dall-e-2 takes at most 1" in caught.value.message


class UnreportedEngine(LocalEngine):
    """An engine that cannot say yet what its model takes (a Ray replica that did not
    answer in time): the engine's own check at submit decides."""

    async def model(self, name: str) -> ModelStatus | None:
        return ModelStatus(name, loaded=False)


def test_where_the_limit_is_not_known_yet_the_engine_refuses_at_submit(
    tmp_path: Path, backend: EditingBackend
) -> None:
    backend.max_input_images = 2
    settings = Settings(storage_dir=tmp_path / "images", api_keys=(KEY,),
                        models=(ModelSpec(name="fake", source="fake"),))
    engine = UnreportedEngine(settings.models, {"fake": backend})
    with TestClient(build_app(settings, engine=engine)) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.edit(model="fake", image=three_images(), prompt="x")
    assert (caught.value.param, caught.value.code) == ("image", "too_many_images")
    assert "takes at most 2 images" in caught.value.message
    assert backend.calls == []


def test_a_model_that_cannot_edit_is_refused_before_its_images_are_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[object] = []
    monkeypatch.setattr(edits, "decode_probed", decoded.append)
    with make_client(tmp_path, FakeBackend(), auto_aliases=True, aliases=()) as client:
        for route in (client.post("/v1/images/edits", headers=AUTH, data={"prompt": "x"},
                                  files={"image": ("a.png", png(Image.new("RGB", (64, 64))),
                                                   "image/png")}),
                      client.post("/v1/images/variations", headers=AUTH, files={
                          "image": ("a.png", png(Image.new("RGB", (64, 64))), "image/png")})):
            assert route.status_code == 400, route.text
            assert route.json()["error"]["code"] == "unsupported_value"
    assert decoded == []


# --- edit pairing: one public name, edits drawn by another model ------------------------


def test_a_model_pairs_with_another_for_its_edits_and_variations(tmp_path: Path) -> None:
    drawer, editor = FakeBackend(), EditingBackend()
    editor.max_input_images = 3
    settings = Settings(
        storage_dir=tmp_path / "images", api_keys=(KEY,), models=(
            ModelSpec(name="flux", source="flux", edit_model="qwen"),
            ModelSpec(name="qwen-edit", source="qwen-edit", aliases=("qwen",))))
    with TestClient(build_app(settings, backends={"flux": drawer, "qwen-edit": editor})
                    ) as client:
        sdk = sdk_for(client)
        sdk.images.generate(model="flux", prompt="a fox", size="256x256")
        edited = sdk.images.edit(model="flux", image=three_images()[:2], prompt="together")
        sdk.images.edit(model="gpt-image-1", image=three_images()[:1], prompt="the default")
        with pytest.warns(DeprecationWarning):
            sdk.images.create_variation(model="flux", image=three_images()[0], size="256x256")
    assert len(drawer.calls) == 1 and len(editor.calls) == 3
    assert len(editor.calls[0].references) == 1
    assert edited.data  # drawn by qwen-edit for the name flux


def test_more_images_than_the_paired_model_takes_names_that_model(tmp_path: Path) -> None:
    settings = Settings(
        storage_dir=tmp_path / "images", api_keys=(KEY,), models=(
            ModelSpec(name="flux", source="flux", edit_model="kontext"),
            ModelSpec(name="kontext", source="kontext")))
    with TestClient(build_app(settings, backends={"flux": FakeBackend(),
                                                  "kontext": EditingBackend()})) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.edit(model="flux", image=three_images()[:2], prompt="x")
    assert "The model 'kontext' edits one image at a time" in caught.value.message

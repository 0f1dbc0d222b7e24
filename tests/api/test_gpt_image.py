"""GPT-image requests through the official SDK: formats, compression, echoed options,
usage, backgrounds and the model list."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from diffuserve.engine.types import GenerationParams, StepCallback
from tests.support.clients import AUTH, make_client, sdk_for
from tests.support.fakes import FakeBackend

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


@pytest.fixture
def client(tmp_path: Path, fake_backend: FakeBackend) -> TestClient:
    return make_client(tmp_path, fake_backend, auto_aliases=True, aliases=())



def decoded(b64: str | None) -> bytes:
    assert b64 is not None
    return base64.b64decode(b64)


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_each_output_format_is_what_it_says(client: TestClient, output_format: str) -> None:
    with client:
        result = sdk_for(client).images.generate(model="gpt-image-2", prompt="a red apple",
                                             output_format=output_format, size="1280x720")
    data = decoded(result.data[0].b64_json if result.data else None)
    assert data.startswith(MAGIC[output_format])
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (1280, 720)
        assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format]
    assert (result.output_format, result.size) == (output_format, "1280x720")


class NoisyBackend(FakeBackend):
    """Draws seeded noise: a picture whose size depends on how hard it is compressed."""

    def generate(self, params: GenerationParams, on_step: StepCallback | None = None
                 ) -> list[Image.Image]:
        self.calls.append(params)
        return [Image.fromarray(np.random.default_rng(seed).integers(
            0, 256, (params.height, params.width, 3), dtype=np.uint8)) for seed in params.seeds]


@pytest.mark.parametrize("output_format", ["jpeg", "webp"])
def test_output_compression_takes_effect(tmp_path: Path, output_format: str) -> None:
    client = make_client(tmp_path, NoisyBackend(), auto_aliases=True, aliases=())

    def size_at(compression: int) -> int:
        result = sdk_for(client).images.generate(
            model="gpt-image-1.5", prompt="a noisy picture " * 3, output_format=output_format,
            output_compression=compression, extra_body={"seed": 3})
        return len(decoded(result.data[0].b64_json if result.data else None))

    with client:
        assert size_at(5) < size_at(100)


def test_a_gpt_image_response_echoes_resolved_options_and_usage(client: TestClient) -> None:
    with client:
        result = sdk_for(client).images.generate(model="gpt-image-1", prompt="a red apple",
                                             n=2, quality="auto", size="auto")
    assert (result.background, result.output_format) == ("opaque", "png")
    assert (result.quality, result.size) == ("medium", "1024x1024")  # never "auto"
    usage = result.usage
    assert usage is not None
    assert usage.input_tokens_details.text_tokens == 3  # "a", "red", "apple"
    assert usage.input_tokens_details.image_tokens == 0
    assert usage.output_tokens == 2 * 1056
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_dall_e_responses_carry_no_gpt_image_fields(client: TestClient) -> None:
    with client:
        raw = client.post("/v1/images/generations", headers=AUTH,
                          json={"model": "dall-e-2", "prompt": "a", "size": "256x256"}).json()
    assert set(raw) == {"created", "data"}


def test_a_transparent_background_the_model_cannot_draw_is_a_clear_400(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    with client, pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.generate(model="gpt-image-2", prompt="a", background="transparent")
    assert caught.value.code == "unsupported_value"
    assert "transparent background" in caught.value.message
    assert fake_backend.calls == []  # refused, never drawn opaque


def test_models_carry_shutdown_date(client: TestClient) -> None:
    with client:
        listing = client.get("/v1/models", headers=AUTH).json()
        one = sdk_for(client).models.retrieve("gpt-image-2.5-sunburst")
    assert all(model["shutdown_date"] is None for model in listing["data"])
    assert {"gpt-image-2", "gpt-image-1-mini", "chatgpt-image-latest"} <= {
        model["id"] for model in listing["data"]}
    assert one.shutdown_date is None


#: A request each name takes, answered in base64.
ANSWERED_IN_BASE64 = {"gpt-image-2": {}, "dall-e-2": {"size": "256x256",
                                                     "response_format": "b64_json"}}


@pytest.mark.parametrize("fields, expected", [
    ({"safety_identifier": "hash-of-alice", "user": "alice"}, "hash-of-alice"),
    ({"user": "alice"}, "alice"),  # the deprecated field, when no identifier is given
    ({"safety_identifier": "", "user": "alice"}, "alice"),  # empty: as if omitted
])
@pytest.mark.parametrize("model", ["gpt-image-2", "dall-e-2"])
def test_responses_echo_the_effective_safety_identifier(
    client: TestClient, model: str, fields: dict[str, str], expected: str
) -> None:
    with client:
        result = sdk_for(client).images.generate(
            model=model, prompt="a", **ANSWERED_IN_BASE64[model], **fields)  # type: ignore[arg-type]
    assert result.safety_identifier == expected


def test_without_an_identifier_none_is_echoed(client: TestClient) -> None:
    with client:
        raw = client.post("/v1/images/generations", headers=AUTH,
                          json={"model": "gpt-image-2", "prompt": "a"}).json()
    assert "safety_identifier" not in raw


def test_completed_generation_events_carry_the_safety_identifier(client: TestClient) -> None:
    with client:
        events = list(sdk_for(client).images.generate(
            model="gpt-image-2", prompt="a", n=2, stream=True, safety_identifier="hash-of-bob"))
    assert [(e.type, e.safety_identifier) for e in events] == [
        ("image_generation.completed", "hash-of-bob")] * 2

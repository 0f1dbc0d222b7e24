"""A served model's own name through the SDK: any size within bounds, prompts as long as
its text encoder reads, the GPT-image and the DALL·E fields together; OpenAI's names keep
OpenAI's rules."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import openai
import pytest
from PIL import Image

from tests.support.clients import make_client, sdk_for
from tests.support.fakes import FakeBackend


def size_of(b64: str | None) -> tuple[int, int]:
    assert b64 is not None
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.size


@pytest.mark.parametrize("size", ["1472x1140", "1536x1024", "1000x750", "64x192", "auto"])
def test_a_served_name_draws_any_size_within_bounds(tmp_path: Path, size: str) -> None:
    with make_client(tmp_path, FakeBackend()) as client:
        result = sdk_for(client).images.generate(
            model="fake", prompt="a fox", size=size,  # type: ignore[arg-type]
            response_format="b64_json")
    assert result.data
    expected = (1024, 1024) if size == "auto" else tuple(map(int, size.split("x")))
    assert size_of(result.data[0].b64_json) == expected


@pytest.mark.parametrize("size", ["63x64", "4097x1024", "4096x4096", "1000x64"])
def test_a_size_beyond_the_bounds_says_them(tmp_path: Path, size: str) -> None:
    with make_client(tmp_path, FakeBackend()) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.generate(model="fake", prompt="a fox",
                                        size=size)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.param) == ("invalid_size", "size")
    assert "both sides from 64, the longer at most 4096" in caught.value.message


@pytest.mark.parametrize(("fields", "steps"), [
    ({"quality": "low"}, 5), ({"quality": "medium"}, 10), ({"quality": "high"}, 16),
    ({"quality": "auto"}, 10), ({"quality": "standard"}, 10), ({"quality": "hd"}, 16),
])
def test_a_served_name_takes_gpt_image_and_dall_e_qualities(
    tmp_path: Path, fields: dict[str, str], steps: int
) -> None:
    backend = FakeBackend()
    with make_client(tmp_path, backend) as client:
        sdk_for(client).images.generate(model="fake", prompt="a fox", size="256x256",
                                        **fields)  # type: ignore[arg-type]
    assert backend.calls[0].num_inference_steps == steps


def test_a_served_name_takes_the_gpt_image_fields_and_a_style_in_one_request(
    tmp_path: Path
) -> None:
    backend = FakeBackend()
    with make_client(tmp_path, backend) as client:
        result = sdk_for(client).images.generate(
            model="fake", prompt="a fox", size="1536x1024", quality="high", style="natural",
            output_format="webp", output_compression=80, response_format="b64_json")
    assert result.data and result.data[0].b64_json
    assert base64.b64decode(result.data[0].b64_json)[8:12] == b"WEBP"
    assert backend.calls[0].guidance_scale == 3.0  # the model's natural guidance


def test_a_long_prompt_is_drawn_where_the_model_reads_it(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.max_prompt_tokens = 20_000
    with make_client(tmp_path, backend) as client:
        sdk_for(client).images.generate(model="fake", prompt="a fox " * 5000, size="256x256")
    assert len(backend.calls[0].prompt) == 30_000


def test_a_prompt_longer_than_the_text_encoder_reads_is_refused_in_its_tokens(
    tmp_path: Path
) -> None:
    backend = FakeBackend()
    backend.max_prompt_tokens = 512
    with make_client(tmp_path, backend) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.generate(model="fake", prompt="fox " * 600, size="256x256")
    assert (caught.value.code, caught.value.param) == ("string_above_max_length", "prompt")
    assert caught.value.message.endswith(
        "Invalid 'prompt': the prompt is 600 tokens long, and the model 'fake' reads at most "
        "512. Shorten the prompt.")
    assert backend.calls == []


def test_over_32000_characters_is_refused_before_it_is_counted(tmp_path: Path) -> None:
    with make_client(tmp_path, FakeBackend()) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.generate(model="fake", prompt="x" * 32_001)
    assert (caught.value.code, caught.value.param) == ("string_above_max_length", "prompt")
    assert "maximum length 32000" in caught.value.message


@pytest.mark.parametrize(("model", "fields", "code"), [
    ("dall-e-2", {"prompt": "x" * 1001}, "string_above_max_length"),
    ("dall-e-3", {"prompt": "x" * 4001}, "string_above_max_length"),
    ("dall-e-2", {"size": "1536x1024"}, "invalid_size"),
    ("dall-e-3", {"quality": "high"}, "invalid_value"),
    ("dall-e-2", {"size": "1000x750"}, "invalid_size"),
])
def test_openai_names_keep_openais_rules(tmp_path: Path, model: str,
                                         fields: dict[str, str], code: str) -> None:
    body = {"prompt": "a fox", **fields}
    with make_client(tmp_path, FakeBackend()) as client, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.generate(model=model, **body)  # type: ignore[arg-type]
    assert caught.value.code == code


def test_the_playgrounds_rules_give_each_names_own_free_sizes(tmp_path: Path) -> None:
    with make_client(tmp_path, FakeBackend()) as client:
        document = client.get("/playground/rules.json").json()
    other, gpt_image_2 = document["other"], document["names"]["gpt-image-2"]
    assert other["free_size"] and other["max_prompt_length"] == 32000
    assert (other["size_limits"]["min_side"], other["size_limits"]["max_side"]) == (64, 4096)
    assert other["size_limits"]["hint"].startswith("WIDTHxHEIGHT with both sides from 64")
    assert gpt_image_2["size_limits"]["multiple"] == 16
    assert document["names"]["dall-e-2"]["size_limits"] is None

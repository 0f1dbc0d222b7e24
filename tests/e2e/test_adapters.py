"""LoRA adapters through a live server and the official openai SDK (``extra_body``).

One server serves the tiny SD pipeline as ``sd`` with an adapters folder (``pixel``,
``ink``) and a declared adapter (``clay``, default scale 0.5), a model derived from it
(``pixel-sd``: ``sd`` with ``pixel`` at 0.8, sharing its weights), and the built-in
model, whose pipeline takes no adapters.
"""

from __future__ import annotations

import base64
import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from diffuserve.builtin import WEIGHTS_DIR
from tests.support.live_server import LiveServer, start_server
from tests.support.tiny_loras import write_adapter_models

pytestmark = pytest.mark.e2e

DRAW = {"num_inference_steps": 2, "seed": 11}
#: Batched and single calls differ only by float rounding of batched kernels.
SAME = 2
#: What an adapter changes: the mean difference of the 8-bit pixels.
CHANGED = 3.0


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory,
            tiny_models: dict[str, Path]) -> dict[str, Path]:
    # Concurrent requests may batch (4 at once), and every adapter stays loaded.
    return write_adapter_models(tmp_path_factory.mktemp("adapters-e2e"), tiny_models["sd"],
                                settings="max_batch_size = 4\nmax_loaded_adapters = 8")


@pytest.fixture(scope="module")
def server(folders: dict[str, Path]) -> Iterator[LiveServer]:
    live = start_server(["--models-file", str(folders["root"] / "models.toml"),
                         "--model", f"diffuserve-emoji={WEIGHTS_DIR}"], folders["root"],
                        timeout=180)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused",
                       max_retries=0, timeout=120) as sdk:
        yield sdk


def draw(client: openai.OpenAI, lora: Any = None, model: str = "sd",
         **fields: Any) -> np.ndarray:
    extra: dict[str, Any] = {**DRAW, **fields}
    if lora is not None:
        extra["lora"] = lora
    result = client.images.generate(model=model, prompt="a cat", size="256x256",
                                    response_format="b64_json", extra_body=extra)
    assert result.data is not None and result.data[0].b64_json is not None
    return pixels(result.data[0].b64_json)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"),
                      np.int16)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).mean()) > CHANGED


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.abs(a - b).max()) <= SAME


def png(color: tuple[int, ...] = (120, 160, 200), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (64, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_adapter_changes_the_drawing_and_scale_zero_does_not(
        client: openai.OpenAI) -> None:
    plain = draw(client)
    pixel = draw(client, {"name": "pixel"})
    assert differ(pixel, plain)
    assert same(draw(client, {"name": "pixel", "scale": 0}), plain)
    assert differ(draw(client, {"name": "pixel", "scale": 0.5}), pixel)
    # Stacked adapters draw otherwise than either alone.
    stacked = draw(client, [{"name": "pixel"}, {"name": "ink", "scale": 1.0}])
    assert differ(stacked, pixel) and differ(stacked, draw(client, {"name": "ink"}))
    # And back to the weights alone, exactly.
    assert same(draw(client), plain)


def test_a_declared_adapter_has_its_default_scale(client: openai.OpenAI) -> None:
    assert same(draw(client, {"name": "clay"}), draw(client, {"name": "clay", "scale": 0.5}))
    assert differ(draw(client, {"name": "clay"}), draw(client, {"name": "clay", "scale": 1}))


def test_a_derived_model_equals_the_explicit_request(client: openai.OpenAI) -> None:
    derived = draw(client, model="pixel-sd")
    assert same(derived, draw(client, {"name": "pixel", "scale": 0.8}))
    assert differ(derived, draw(client))
    # A request's own scale for the derived model's adapter wins.
    assert same(draw(client, {"name": "pixel", "scale": 0}, model="pixel-sd"), draw(client))
    listed = {model.id: model for model in client.models.list()}
    assert {"sd", "pixel-sd"} <= set(listed)


def test_concurrent_requests_with_different_adapters_each_draw_as_alone(
        client: openai.OpenAI) -> None:
    """Requests that arrive together batch only with the same adapters and scales."""
    choices: list[Any] = [None, {"name": "pixel"}, {"name": "ink"}, None,
                          {"name": "pixel", "scale": 0.5}, {"name": "pixel"}]
    alone = [draw(client, choice) for choice in choices]
    together: list[np.ndarray | None] = [None] * len(choices)
    start = threading.Barrier(len(choices), timeout=60)

    def send(index: int) -> None:
        start.wait()
        together[index] = draw(client, choices[index])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(choices))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for index, image in enumerate(together):
        assert image is not None and same(image, alone[index]), choices[index]


def test_a_file_dropped_into_the_folder_is_usable_without_a_restart(
        client: openai.OpenAI, folders: dict[str, Path]) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        draw(client, {"name": "late"})
    assert refused.value.body["param"] == "lora.name"  # type: ignore[index]
    shutil.copy(folders["spare"] / "late.safetensors", folders["loras"] / "late.safetensors")
    assert differ(draw(client, {"name": "late"}), draw(client))


def test_edits_and_variations_take_adapters_as_form_fields(client: openai.OpenAI) -> None:
    """The SDK spells extra_body objects in a form as lora[name] (one) or lora[][name]
    (a list)."""
    image = ("start.png", png(), "image/png")

    def edit(lora: Any) -> np.ndarray:
        extra = {**DRAW, **({"lora": lora} if lora is not None else {})}
        result = client.images.edit(model="sd", image=image, prompt="a hat",
                                    size="256x256", response_format="b64_json",
                                    extra_body=extra)
        assert result.data is not None and result.data[0].b64_json is not None
        return pixels(result.data[0].b64_json)

    plain = edit(None)
    one = edit({"name": "pixel", "scale": 1.0})
    assert differ(one, plain)
    assert same(edit([{"name": "pixel", "scale": 1.0}]), one)

    def variation(lora: Any) -> np.ndarray:
        extra = {**DRAW, **({"lora": lora} if lora is not None else {})}
        # openai-python marks the call deprecated (upstream retired it); served here.
        with pytest.warns(DeprecationWarning, match="^deprecated$"):
            result = client.images.create_variation(model="sd", image=image,
                                                    size="256x256",
                                                    response_format="b64_json",
                                                    extra_body=extra)
        assert result.data is not None and result.data[0].b64_json is not None
        return pixels(result.data[0].b64_json)

    assert differ(variation({"name": "ink"}), variation(None))


@pytest.mark.parametrize(("lora", "param"), [
    ({"name": "nope"}, "lora.name"),
    ([{"name": "pixel"}, {"name": "nope"}], "lora[1].name"),
    ({"name": "../loras/pixel"}, "lora.name"),
    ({"name": "https://example.com/pixel.safetensors"}, "lora.name"),
    ({"name": "pixel", "scale": 5}, "lora.scale"),
    ({"name": "pixel", "scale": "high"}, "lora.scale"),
    ({"name": "pixel", "weight": 1}, "lora.weight"),
    ({"scale": 1}, "lora.name"),
    ([{"name": "pixel"}, {"name": "pixel"}], "lora"),
    ([{"name": f"a{index}"} for index in range(9)], "lora"),
    ("pixel", "lora"),
])
def test_every_bad_adapter_request_is_a_400_naming_lora(
        client: openai.OpenAI, lora: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        draw(client, lora)
    error: Any = refused.value.body
    assert error["param"] == param, error
    assert error["message"]


def test_a_model_whose_pipeline_takes_no_adapters_says_so(client: openai.OpenAI,
                                                         server: LiveServer) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        draw(client, {"name": "pixel"}, model="diffuserve-emoji")
    error: Any = refused.value.body
    assert error["param"].startswith("lora") and "diffuserve-emoji" in error["message"]
    # Nothing was queued or lost: the server answers the next request.
    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200

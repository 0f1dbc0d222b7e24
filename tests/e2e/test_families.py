"""Every model family through a live server and the official openai SDK.

One server (``tests/support/small_qwen_edits.py``: diffuserve with Qwen-Image-Edit's
inputs sized 96x64 instead of 1 MP) serves a tiny random pipeline of each family of
``tests/support/tiny_families.py`` under its own name, drawn in 2 steps at a native
square of 80x80 (``resolution = 80``), plus:

- ``flux1-schnell`` and ``z-image`` without ``steps`` or ``guidance_scale``: drawn as
  their model cards say (4 steps without guidance; 9 steps without guidance);
- ``paired``: FLUX.1-dev that draws its edits and variations with Qwen-Image-Edit-Plus
  (``edit_model``).

For each family: generations at the native square (streamed, with partial images before
the image) and at 3:2 (``n=2``; 96x64 for 1536x1024), masked edits with OpenAI's alpha
mask, edits without a mask (instruction edits where the family has them), edits of as
many images as it takes and one more, variations; and for each of these a family cannot
do, a 400 saying what (never a 500: every request's access-log line is checked).
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from PIL import Image

from tests.support.live_server import LiveServer, start_server
from tests.support.tiny_families import FAMILIES

pytestmark = pytest.mark.e2e

NATIVE = 80  # the served models' native square (resolution = 80)
WIDE = (96, 64)  # 3:2, as 1536x1024: the native area in that aspect, drawn as asked
BOX = (32, 16, 64, 48)  # the area a mask redraws (left, top, right, bottom)
FAST = {"num_inference_steps": 2}


@dataclass(frozen=True)
class Served:
    """What a served family does: whether it generates, whether it edits without a mask
    (and so draws variations), the images one edit takes."""

    generates: bool = True
    unmasked: bool = True
    max_images: int = 1


SERVED: dict[str, Served] = {
    "flux1-dev": Served(),
    "flux1-schnell": Served(),
    "flux1-fill": Served(generates=False, unmasked=False),
    "flux1-kontext": Served(),
    "flux2-dev": Served(max_images=10),
    "flux2-klein": Served(max_images=10),
    "flux2-klein-base": Served(max_images=10),
    "sd35": Served(),
    "qwen-image": Served(),
    "qwen-image-edit": Served(generates=False),
    "qwen-image-edit-plus": Served(generates=False, max_images=3),
    "z-image": Served(),
}
NAMES = list(SERVED)
#: Served without steps or guidance: drawn with their own (model card) defaults.
OWN_DEFAULTS = {"flux1-schnell": (4, 0.0), "z-image": (9, 0.0)}


def models_file(folders: dict[str, Path]) -> str:
    tables = []
    for name, folder in folders.items():
        lines = [f'name = "{name}"', f'source = "{folder}"', f"resolution = {NATIVE}",
                 "max_batch_size = 2"]
        if name not in OWN_DEFAULTS:
            lines.append("steps = 2")
        tables.append("[[models]]\n" + "\n".join(lines))
    tables.append("[[models]]\n" + "\n".join([
        'name = "paired"', f'source = "{folders["flux1-dev"]}"', f"resolution = {NATIVE}",
        "steps = 2", 'edit_model = "qwen-image-edit-plus"']))
    return "\n\n".join(tables) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Every family's tiny pipeline, built once, served by one process."""
    root = tmp_path_factory.mktemp("families-e2e")
    folders = {name: FAMILIES[name](root / name) for name in SERVED}
    (root / "models.toml").write_text(models_file(folders))
    live = start_server(["--models-file", str(root / "models.toml")], root, timeout=180,
                        command=[sys.executable, "-m", "tests.support.small_qwen_edits"])
    yield live
    live.stop()
    assert_no_server_errors(live)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused",
                       max_retries=0, timeout=120) as sdk:
        yield sdk


@pytest.fixture(autouse=True)
def no_server_errors(server: LiveServer) -> Iterator[None]:
    yield
    assert_no_server_errors(server)


def assert_no_server_errors(server: LiveServer) -> None:
    """No request of the API so far was answered with a 5xx (``/ready`` is 503 while
    the models load), and nothing raised unexpectedly."""
    lines = [json.loads(line) for line in server.log().splitlines()
             if line.startswith("{")]
    failed = [line for line in lines if line.get("logger") == "diffuserve.access"
              and line["path"].startswith("/v1/") and line.get("status", 0) >= 500]
    assert failed == []
    assert "Traceback" not in server.log()


# --- images ---------------------------------------------------------------------------


def picture(shade: int = 40, size: tuple[int, int] = WIDE) -> Image.Image:
    image = Image.new("RGB", size, (200, shade, 40))
    image.paste((30, 30, 200), (0, 0, size[0] // 2, size[1] // 2))
    return image


def png(image: Image.Image, name: str = "image.png") -> tuple[str, bytes, str]:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return name, buffer.getvalue(), "image/png"


def alpha_mask() -> Image.Image:
    """OpenAI's mask: transparent where the image is to be redrawn (BOX)."""
    mask = Image.new("RGBA", WIDE, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), BOX)
    return mask


def decoded(b64: str | None) -> Image.Image:
    assert b64 is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def images_of(response: Any, count: int, size: tuple[int, int]) -> list[Image.Image]:
    assert response.data is not None and len(response.data) == count
    images = [decoded(item.b64_json) for item in response.data]
    assert [image.size for image in images] == [size] * count
    return images


def refused(call: Callable[[], object], *words: str, param: str | None = None,
            code: str | None = None) -> openai.BadRequestError:
    """The call is a 400 whose message says ``words``."""
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    error = caught.value
    assert error.status_code == 400
    for word in words:
        assert word in error.message, error.message
    if param is not None:
        assert error.param == param
    if code is not None:
        assert error.code == code
    return error


def generation_log(server: LiveServer, model: str) -> dict[str, Any]:
    """The last ``generation`` log line of a request for ``model``."""
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    done = [line for line in lines
            if line.get("message") == "generation" and line.get("model") == model]
    assert done, f"no generation of {model} logged"
    return done[-1]


def variation(client: openai.OpenAI, model: str) -> Any:
    """A variation of :func:`picture` at its size (openai-python marks the call
    deprecated: upstream retired the endpoint; served here)."""
    with pytest.warns(DeprecationWarning, match="^deprecated$"):
        return client.images.create_variation(
            model=model, image=png(picture()), size="auto",  # type: ignore[arg-type]
            response_format="b64_json", extra_body=FAST)


# --- generation -----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_n_images_at_another_aspect_ratio(name: str, client: openai.OpenAI) -> None:
    def generate() -> Any:
        return client.images.generate(model=name, prompt="a red fox in the snow", n=2,
                                      size=f"{WIDE[0]}x{WIDE[1]}",
                                      response_format="b64_json", extra_body=FAST)

    if not SERVED[name].generates:
        refused(generate, f"The model {name!r} does not support generate tasks",
                param="model")
        return
    first, second = images_of(generate(), 2, WIDE)
    assert not np.array_equal(np.asarray(first), np.asarray(second))


@pytest.mark.parametrize("name", NAMES)
def test_a_stream_shows_partial_images_before_the_image(
        name: str, client: openai.OpenAI) -> None:
    """At the native square; an edit-only model streams an edit instead (masked for
    FLUX.1 Fill)."""
    served = SERVED[name]
    if served.generates:
        stream: Any = client.images.generate(
            model=name, prompt="a red fox", size=f"{NATIVE}x{NATIVE}", stream=True,
            partial_images=2)
        kind, size = "image_generation", (NATIVE, NATIVE)
    else:
        mask = {} if served.unmasked else {"mask": png(alpha_mask(), "mask.png")}
        stream = client.images.edit(model=name, prompt="a red fox", image=png(picture()),
                                    size="auto", stream=True, partial_images=2, **mask)
        kind, size = "image_edit", WIDE
    events = list(stream)
    assert [event.type for event in events] == [
        f"{kind}.partial_image", f"{kind}.partial_image", f"{kind}.completed"]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    pictures = [decoded(event.b64_json) for event in events]
    assert [p.size for p in pictures] == [size] * 3
    assert pictures[0].tobytes() != pictures[-1].tobytes()


def test_a_model_served_without_steps_or_guidance_draws_as_its_model_card_says(
        server: LiveServer, client: openai.OpenAI) -> None:
    for name, (steps, guidance) in OWN_DEFAULTS.items():
        images_of(client.images.generate(model=name, prompt="a red fox",
                                         size=f"{NATIVE}x{NATIVE}",
                                         response_format="b64_json"), 1, (NATIVE, NATIVE))
        logged = generation_log(server, name)
        assert (logged["steps"], logged["guidance_scale"]) == (steps, guidance), name


# --- edits ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_masked_edit_redraws_only_where_the_alpha_mask_is_clear(
        name: str, client: openai.OpenAI) -> None:
    source = picture()
    (edited,) = images_of(client.images.edit(
        model=name, prompt="a red fox", image=png(source), mask=png(alpha_mask(), "m.png"),
        size="auto", response_format="b64_json", extra_body=FAST), 1, WIDE)
    drawn = np.asarray(edited.convert("RGB"), np.int16)
    kept = np.asarray(source, np.int16)
    left, top, right, bottom = BOX
    outside = np.ones(drawn.shape[:2], bool)
    outside[top - 3:bottom + 3, left - 3:right + 3] = False  # the box and its feather
    assert np.array_equal(drawn[outside], kept[outside])
    inside = (slice(top, bottom), slice(left, right))
    assert np.abs(drawn[inside] - kept[inside]).mean() > 5


@pytest.mark.parametrize("name", NAMES)
def test_an_edit_without_a_mask(name: str, client: openai.OpenAI) -> None:
    """An instruction edit (Kontext, FLUX.2, Qwen-Image-Edit) or image to image; FLUX.1
    Fill only inpaints: refused before it is queued."""
    def edit() -> Any:
        return client.images.edit(model=name, prompt="make it night", size="auto",
                                  image=png(picture()), response_format="b64_json",
                                  extra_body=FAST)

    if not SERVED[name].unmasked:
        refused(edit, f"The model {name!r} does not support edits without a mask",
                param="model", code="unsupported_value")
        return
    images_of(edit(), 1, WIDE)


@pytest.mark.parametrize("name", NAMES)
def test_an_edit_of_as_many_images_as_the_model_takes_and_no_more(
        name: str, client: openai.OpenAI) -> None:
    limit = SERVED[name].max_images
    images = [png(picture(shade, (64, 64)), f"{shade}.png")
              for shade in range(40, 40 + 10 * (limit + 1), 10)]
    if limit > 1:
        images_of(client.images.edit(
            model=name, prompt="the cat of Picture 2 in the room of Picture 1",
            image=images[:limit], size="auto", response_format="b64_json",
            extra_body=FAST), 1, (64, 64))
    words = (f"takes at most {limit} images in one edit; {limit + 1} were sent"
             if limit > 1 else "edits one image at a time; 2 were sent")
    refused(lambda: client.images.edit(model=name, prompt="x", image=images[:limit + 1]),
            f"The model {name!r}", words, param="image", code="too_many_images")


@pytest.mark.parametrize("name", NAMES)
def test_a_variation(name: str, client: openai.OpenAI) -> None:
    def vary() -> Any:
        return variation(client, name)

    if not SERVED[name].unmasked:
        refused(vary, f"The model {name!r} does not support variation tasks",
                param="model")
        return
    images_of(vary(), 1, WIDE)


# --- pairing, negative prompts --------------------------------------------------------


def test_a_name_that_generates_with_one_family_and_edits_with_another(
        server: LiveServer, client: openai.OpenAI) -> None:
    """``paired`` is FLUX.1-dev (one image an edit) with Qwen-Image-Edit-Plus's edits
    (three)."""
    images_of(client.images.generate(model="paired", prompt="a red fox",
                                     response_format="b64_json", size="96x64"), 1, WIDE)
    assert generation_log(server, "paired")["served_by"] == "paired"
    three = [png(picture(shade, (64, 64)), f"{shade}.png") for shade in (40, 80, 120, 160)]
    images_of(client.images.edit(model="paired", prompt="Picture 1 with Picture 2's cat",
                                 image=three[:3], size="auto", response_format="b64_json",
                                 extra_body=FAST), 1, (64, 64))
    assert generation_log(server, "paired")["served_by"] == "qwen-image-edit-plus"
    refused(lambda: client.images.edit(model="paired", prompt="x", image=three),
            "'qwen-image-edit-plus' takes at most 3 images", code="too_many_images")
    images_of(variation(client, "paired"), 1, WIDE)
    assert generation_log(server, "paired")["served_by"] == "qwen-image-edit-plus"


@pytest.mark.parametrize(("name", "guidance", "unused"), [
    ("flux1-dev", None, "FLUX.1 applies a negative prompt only with true CFG"),
    ("flux2-klein", None, "FLUX.2 pipelines take no negative prompt"),
    ("z-image", None, "only at guidance_scale above 0"),  # Turbo's default: 0
    ("z-image", 2.0, None),
    ("sd35", None, None),
    ("qwen-image", None, None),
])
def test_a_negative_prompt_is_used_or_refused_saying_why(
        name: str, guidance: float | None, unused: str | None,
        client: openai.OpenAI) -> None:
    body: dict[str, object] = {"negative_prompt": "blurry", **FAST}
    if guidance is not None:
        body["guidance_scale"] = guidance

    def generate() -> Any:
        return client.images.generate(model=name, prompt="a red fox", size="96x64",
                                      response_format="b64_json", extra_body=body)

    if unused is None:
        images_of(generate(), 1, WIDE)
        return
    error = refused(generate, f"The model {name!r} does not support a negative prompt",
                    unused, param="negative_prompt", code="unsupported_value")
    assert re.search(r"\(.+\)\.$", error.message)

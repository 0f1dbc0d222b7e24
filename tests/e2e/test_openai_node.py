"""The official openai-node SDK against a live server: generations with the GPT-image
fields, a parsed stream of partial images, edits with a mask (multipart, the way the SDK
sends files and lists), a streamed edit, variations, errors as its exception classes.

Needs the test extra's Node.js and ``npm ci --prefix tests/e2e/node``: both are what
``scripts/test-setup.sh`` installs; without them these tests fail and say so.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from diffuserve.protocol.rules import OPENAI_MODEL_NAMES
from tests.support.live_server import start_server
from tests.support.node import NODE_DIR, node_binary, require_node_sdk

pytestmark = pytest.mark.e2e

API_KEY = "sk-test-node-0123456789abcdef"


@pytest.fixture(scope="module")
def node_results(tiny_models: dict[str, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    node = node_binary()
    require_node_sdk()
    tmp = tmp_path_factory.mktemp("node")
    # Few steps: what is checked is what the SDK sends and reads, not the drawing.
    (tmp / "models.toml").write_text(
        f'[[models]]\nname = "tiny"\nsource = "{tiny_models["sd"]}"\nsteps = 4\n')
    server = start_server(["--models-file", str(tmp / "models.toml"), "--api-key", API_KEY],
                          tmp)
    try:
        done = subprocess.run(
            [str(node), str(NODE_DIR / "sdk_check.mjs"), f"{server.base_url}/v1", API_KEY],
            capture_output=True, text=True, timeout=300, check=False)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    results: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def test_node_lists_every_model_name_with_its_shutdown_date(
    node_results: dict[str, object],
) -> None:
    models = dict(node_results["models"])  # type: ignore[call-overload]
    assert {"tiny", *OPENAI_MODEL_NAMES} == set(models)
    assert set(models.values()) == {None}


def test_node_generates_webp_at_a_free_size_with_usage(node_results: dict[str, object]) -> None:
    generated = node_results["generate"]
    assert isinstance(generated, dict)
    assert (generated["count"], generated["magic"]) == (2, "RIFF")
    assert (generated["output_format"], generated["size"]) == ("webp", "1280x720")
    assert (generated["quality"], generated["background"]) == ("medium", "opaque")
    usage = generated["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["text_tokens"] > 0


def test_node_parses_the_stream_of_partial_images(node_results: dict[str, object]) -> None:
    assert node_results["stream"] == [
        ["image_generation.partial_image", 0, True],
        ["image_generation.partial_image", 1, True],
        ["image_generation.completed", None, True],
    ]


def test_node_raises_its_bad_request_error(node_results: dict[str, object]) -> None:
    assert node_results["error"] == {"name": "BadRequestError", "status": 400,
                                     "code": "invalid_size", "param": "size"}


def test_node_edits_with_a_mask_streams_an_edit_and_makes_variations(
    node_results: dict[str, object],
) -> None:
    assert node_results["edit"] == {"count": 1, "size": "256x256", "image_tokens": 85}
    assert node_results["edit_stream"] == ["image_edit.partial_image", "image_edit.completed"]
    assert node_results["variations"] == 2

"""Many models on one machine, through a live server and the official openai SDK.

One server with ``--max-loaded-models 2`` serves three tiny models: ``sd`` (tiny SD),
``sd-int8`` (the same weights quantised to int8) and ``sdxl`` (tiny SDXL); a keys file
holds a user's key and an admin's.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.live_server import LiveServer, start_server

pytestmark = pytest.mark.e2e

USER_KEY = "sk-user-0123456789abcdef"
ADMIN_KEY = "sk-admin-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           tiny_models: dict[str, Path]) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("residency-e2e")
    (root / "keys").write_text(f"{USER_KEY} someone\n{ADMIN_KEY} operator role=admin\n")
    (root / "models.toml").write_text(
        f'[[models]]\nname = "sd"\nsource = "{tiny_models["sd"]}"\n\n'
        f'[[models]]\nname = "sd-int8"\nsource = "{tiny_models["sd"]}"\nquantize = "int8"\n\n'
        f'[[models]]\nname = "sdxl"\nsource = "{tiny_models["sdxl"]}"\n')
    live = start_server(["--models-file", str(root / "models.toml"),
                         "--api-keys-file", str(root / "keys"),
                         "--max-loaded-models", "2"], root, timeout=180)
    yield live
    live.stop()


def sdk(server: LiveServer, key: str = USER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0,
                         timeout=120)


def states(server: LiveServer) -> dict[str, dict[str, Any]]:
    listing = httpx.get(f"{server.base_url}/v1/models",
                        headers={"Authorization": f"Bearer {USER_KEY}"}).json()["data"]
    return {entry["id"]: entry for entry in listing if entry["id"] in ("sd", "sd-int8", "sdxl")}


def loaded(server: LiveServer) -> set[str]:
    return {name for name, entry in states(server).items() if entry["loaded"]}


def draw(client: openai.OpenAI, model: str) -> None:
    result = client.images.generate(model=model, prompt="a cat", size="256x256",
                                    response_format="b64_json",
                                    extra_body={"num_inference_steps": 2, "seed": 3})
    assert result.data is not None and len(result.data) == 1


def loads(server: LiveServer, model: str) -> float:
    metrics = httpx.get(f"{server.base_url}/metrics",
                        headers={"Authorization": f"Bearer {USER_KEY}"}).text
    found = re.search(rf'^diffuserve_model_loads_total{{model="{re.escape(model)}"}} (\S+)$',
                      metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_three_models_in_two_places_are_each_served_in_turn(server: LiveServer) -> None:
    # The first two configured load at start; /ready counts only them.
    assert httpx.get(f"{server.base_url}/ready").status_code == 200
    with sdk(server) as client:
        assert loaded(server) == {"sd", "sd-int8"}
        draw(client, "sd")
        draw(client, "sdxl")  # sd-int8, the least recently used, makes room
        assert loaded(server) == {"sd", "sdxl"}
        draw(client, "sd-int8")  # sd's turn to go
        assert loaded(server) == {"sdxl", "sd-int8"}
        draw(client, "sd")
        assert loaded(server) == {"sd-int8", "sd"}
    assert httpx.get(f"{server.base_url}/ready").status_code == 200
    entry = states(server)["sd"]
    assert (entry["object"], entry["owned_by"], entry["device"], entry["dtype"]) == (
        "model", "diffuserve", "cpu", "float32")


def test_int8_is_served_with_fewer_weight_bytes_than_the_same_model_unquantised(
        server: LiveServer) -> None:
    with sdk(server) as client:
        draw(client, "sd")
        draw(client, "sd-int8")
    entries = states(server)
    plain, int8 = entries["sd"], entries["sd-int8"]
    assert (plain["quantize"], int8["quantize"]) == (None, "int8")
    assert plain["loaded"] and int8["loaded"]
    assert 0 < int8["weight_bytes"] < plain["weight_bytes"]


def test_only_an_admin_key_loads_and_unloads(server: LiveServer) -> None:
    with sdk(server) as user, sdk(server, ADMIN_KEY) as admin:
        for action in ("load", "unload"):
            with pytest.raises(openai.PermissionDeniedError) as refused:
                user.post(f"/models/sdxl/{action}", cast_to=object)
            assert refused.value.code == "insufficient_permissions"
        with pytest.raises(openai.NotFoundError):
            admin.post("/models/nope/load", cast_to=object)
        unloaded = admin.post("/models/sd/unload", cast_to=dict)
        assert (unloaded["id"], unloaded["loaded"], unloaded["weight_bytes"]) == (
            "sd", False, None)
        assert "sd" not in loaded(server)
        reloaded = admin.post("/models/sd/load", cast_to=dict)
        assert reloaded["loaded"] and reloaded["weight_bytes"] > 0
        assert "sd" in loaded(server) and len(loaded(server)) == 2


def test_concurrent_requests_for_an_unloaded_model_are_all_served_by_one_load(
        server: LiveServer) -> None:
    with sdk(server, ADMIN_KEY) as admin:
        admin.post("/models/sdxl/unload", cast_to=dict)
    before = loads(server, "sdxl")
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with sdk(server) as client:
                draw(client, "sdxl")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert loads(server, "sdxl") == before + 1
    assert "sdxl" in loaded(server)
    assert "Traceback" not in server.log()

"""``/v1/models`` with each model's state, and the admin's load and unload routes, in
process over fakes that can be unloaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from diffuserve.engine.types import ModelDefaults
from tests.support.clients import AUTH, KEY, assert_envelope, sdk_for
from tests.support.fakes import FakeBackend, ResidentBackend

ADMIN_KEY = "sk-admin-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def client(tmp_path: Path, log: list[str]) -> Iterator[TestClient]:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} someone\n{ADMIN_KEY} operator role=admin\n")
    config = Settings(
        storage_dir=tmp_path / "images", api_keys_file=keys, auto_aliases=False,
        models=(ModelSpec(name="a", source="a"), ModelSpec(name="b", source="b"),
                ModelSpec(name="fixed", source="fixed")),
        aliases=("dall-e-3=b",), max_loaded_models=2)
    backends = {"a": ResidentBackend("a", log, weights=1234),
                "b": ResidentBackend("b", log, weights=99),
                "fixed": FakeBackend(loaded=False)}
    with TestClient(build_app(config, backends=backends),  # type: ignore[arg-type]
                    raise_server_exceptions=False) as client:
        yield client


def states(client: TestClient) -> dict[str, tuple[bool, int | None]]:
    listing = client.get("/v1/models", headers=AUTH).json()["data"]
    return {entry["id"]: (entry["loaded"], entry["weight_bytes"]) for entry in listing}


def test_each_name_lists_the_state_of_the_weights_that_draw_for_it(
        client: TestClient, log: list[str]) -> None:
    # Two places: a and b load at start, fixed (third) when it is first asked for.
    assert client.get("/ready").status_code == 200
    assert states(client) == {"a": (True, 1234), "b": (True, 99), "fixed": (False, None),
                              "dall-e-3": (True, 99)}
    entry = client.get("/v1/models/dall-e-3", headers=AUTH).json()
    assert {key: entry[key] for key in ("id", "object", "owned_by", "root", "loaded",
                                        "device", "quantize")} == {
        "id": "dall-e-3", "object": "model", "owned_by": "diffuserve", "root": "b",
        "loaded": True, "device": "fake", "quantize": None}
    # A request for the unloaded model loads it, in place of the least recently used.
    assert client.post("/v1/images/generations", headers=AUTH,
                       json={"model": "fixed", "prompt": "x"}).status_code == 200
    assert states(client)["fixed"][0] and not states(client)["a"][0]
    # The SDK reads the list as OpenAI's, the state as extra fields.
    models = sdk_for(client).models.list().data
    assert {model.id: getattr(model, "loaded", None) for model in models} == {
        "a": False, "b": True, "fixed": True, "dall-e-3": True}


def test_an_admin_key_loads_and_unloads_a_model_by_any_of_its_names(
        client: TestClient, log: list[str]) -> None:
    unloaded = client.post("/v1/models/dall-e-3/unload", headers=ADMIN)
    assert unloaded.status_code == 200, unloaded.text
    assert (unloaded.json()["id"], unloaded.json()["root"], unloaded.json()["loaded"]) == (
        "dall-e-3", "b", False)
    assert states(client)["b"] == (False, None)
    loaded = client.post("/v1/models/b/load", headers=ADMIN).json()
    assert (loaded["loaded"], loaded["weight_bytes"]) == (True, 99)
    # Loading what is loaded changes nothing; unloading what is not, neither.
    assert client.post("/v1/models/b/load", headers=ADMIN).status_code == 200
    assert client.post("/v1/models/b/unload", headers=ADMIN).status_code == 200
    assert client.post("/v1/models/b/unload", headers=ADMIN).status_code == 200
    assert log == ["load a", "load b", "unload b", "load b", "unload b"]


def test_a_user_key_may_not_load_or_unload(client: TestClient, log: list[str]) -> None:
    for action in ("load", "unload"):
        error = assert_envelope(client.post(f"/v1/models/a/{action}", headers=AUTH), 403,
                                "insufficient_permissions")
        assert "role=admin" in str(error["message"])
        assert client.post(f"/v1/models/a/{action}").status_code == 401
    with pytest.raises(openai.PermissionDeniedError):
        sdk_for(client).post("/models/a/unload", cast_to=object)
    assert log == ["load a", "load b"]


def test_an_unknown_model_is_a_404_and_a_model_that_cannot_unload_a_400(
        client: TestClient) -> None:
    assert_envelope(client.post("/v1/models/nope/load", headers=ADMIN), 404,
                    "model_not_found", "model")
    client.post("/v1/models/a/unload", headers=ADMIN)
    assert client.post("/v1/models/fixed/load", headers=ADMIN).json()["loaded"] is True
    error = assert_envelope(client.post("/v1/models/fixed/unload", headers=ADMIN), 400,
                            "unsupported_value", "model")
    assert "cannot unload" in str(error["message"])


def test_on_a_server_without_keys_anyone_may_load_and_unload(tmp_path: Path) -> None:
    log: list[str] = []
    config = Settings(storage_dir=tmp_path / "images", auto_aliases=False,
                      models=(ModelSpec(name="a", source="a"),))
    with TestClient(build_app(config, backends={"a": ResidentBackend("a", log)})) as client:
        assert client.post("/v1/models/a/unload").json()["loaded"] is False
    assert log == ["load a", "unload a"]


class TurboBackend(ResidentBackend):
    """A model whose own steps and guidance are known once it is loaded (as a family's
    model card's are)."""

    def load(self) -> None:
        super().load()
        self.defaults = ModelDefaults(steps=7, guidance_scale=0.0)


def test_a_model_loaded_on_demand_is_drawn_with_its_own_steps_and_guidance(
        tmp_path: Path) -> None:
    log: list[str] = []
    turbo = TurboBackend("turbo", log)
    config = Settings(storage_dir=tmp_path / "images", auto_aliases=False,
                      models=(ModelSpec(name="a", source="a"),
                              ModelSpec(name="turbo", source="turbo")),
                      max_loaded_models=1)
    backends = {"a": ResidentBackend("a", log), "turbo": turbo}
    with TestClient(build_app(config, backends=backends)) as client:  # type: ignore[arg-type]
        for _ in range(2):  # its first request ever, then one that loads it again
            client.post("/v1/models/a/load")
            assert client.post("/v1/images/generations", json={
                "model": "turbo", "prompt": "x"}).status_code == 200
    assert [(call.num_inference_steps, call.guidance_scale) for call in turbo.calls] == [
        (7, 0.0), (7, 0.0)]
    assert log == ["load a", "unload a", "load turbo", "unload turbo", "load a",
                   "unload a", "load turbo"]

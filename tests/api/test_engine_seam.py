"""The routes speak only EngineClient: another engine plugs in as one small class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
from fastapi.testclient import TestClient
from PIL import Image

from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from diffuserve.engine.client import EngineClient
from diffuserve.engine.errors import QueueFull
from diffuserve.engine.types import ModelStatus, Result, Task, TaskEvent


class SolidColourEngine(EngineClient):
    """An engine elsewhere, as far as the server can tell: draws solid colours, and
    refuses a prompt of "busy" as a full queue."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.drained = False

    async def start(self) -> None:
        pass

    async def stream(self, task: Task) -> AsyncIterator[TaskEvent]:  # type: ignore[override]
        self.tasks.append(task)
        if task.params.prompt == "busy":
            raise QueueFull(task.model, 1, 9)
        images = tuple(Image.new("RGB", (task.params.width, task.params.height), (seed, 0, 0))
                       for seed in task.params.seeds)
        yield Result(images, queued_seconds=0.0, run_seconds=0.0)

    async def models(self) -> list[ModelStatus]:
        return [ModelStatus("remote", loaded=True)]

    def drain(self) -> None:
        self.drained = True

    def abort(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def test_the_server_runs_on_any_engine_client(tmp_path: Path) -> None:
    engine = SolidColourEngine()
    settings = Settings(storage_dir=tmp_path, models=(ModelSpec(name="remote", source="x"),))
    with TestClient(build_app(settings, engine=engine)) as client:
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="x", max_retries=0,
                            http_client=client)
        result = sdk.images.generate(model="dall-e-2", prompt="a", n=2, size="256x256",
                                     extra_body={"seed": 40})
        assert len(result.data) == 2
        assert client.get(result.data[0].url or "").status_code == 200
        assert client.get("/ready").json() == {"status": "ready", "models": {"remote": True}}
        busy = client.post("/v1/images/generations", json={"prompt": "busy"})
    assert busy.status_code == 429
    assert busy.headers["retry-after"] == "9"
    task = engine.tasks[0]
    assert (task.model, task.params.seeds, task.params.width) == ("remote", (40, 41), 256)
    assert task.deadline is not None

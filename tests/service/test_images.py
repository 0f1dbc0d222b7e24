"""ImageService: one way from a typed request to a plan, then to a response or a stream
opened only once the engine accepted the work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from diffuserve.config import ModelSpec, Settings
from diffuserve.engine.client import EngineClient
from diffuserve.engine.errors import QueueFull
from diffuserve.engine.types import (
    Accepted,
    ModelDefaults,
    ModelStatus,
    Result,
    Task,
    TaskEvent,
)
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.sizes import Size
from diffuserve.service.catalog import ModelCatalog
from diffuserve.service.images import ImageService, StreamEvent
from diffuserve.service.planning import GenerationPlan
from diffuserve.storage.local import LocalImageStore
from diffuserve.storage.signing import UrlSigner


class ScriptedEngine(EngineClient):
    """Answers every task with ``Accepted`` (unless ``accepts`` is off) and one image;
    refuses a prompt of "busy" as a full queue, before accepting it."""

    def __init__(self, *, accepts: bool = True) -> None:
        self.accepts = accepts
        self.closed = 0

    async def start(self) -> None:
        pass

    async def stream(self, task: Task) -> AsyncIterator[TaskEvent]:
        try:
            if task.params.prompt == "busy":
                raise QueueFull(task.model, 1, 1)
            if self.accepts:
                yield Accepted()
            image = Image.new("RGB", (task.params.width, task.params.height), (9, 9, 9))
            yield Result((image,), queued_seconds=0.0, run_seconds=0.0)
        finally:
            self.closed += 1

    async def models(self) -> list[ModelStatus]:
        return [ModelStatus("m", loaded=True)]

    def drain(self) -> None:
        pass

    def abort(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def service_for(tmp_path: Path, engine: EngineClient, **settings: object) -> ImageService:
    catalog = ModelCatalog.from_settings(
        Settings(models=(ModelSpec(name="m", source="org/m"),), **settings))  # type: ignore[arg-type]
    store = LocalImageStore(tmp_path, 60, UrlSigner(b"k" * 32, 60), link_path="/images")
    return ImageService(catalog, engine, store)


def streamed(service: ImageService, prompt: str) -> list[StreamEvent]:
    async def scenario() -> list[StreamEvent]:
        plan = await service.plan(ImageGenerationRequest(
            prompt=prompt, model="gpt-image-1", stream=True))
        assert isinstance(plan, GenerationPlan)
        return [event async for event in await service.open_stream(plan)]

    return asyncio.run(scenario())


def test_an_omitted_model_is_the_catalogs_default_and_auto_is_drawn_square(
    tmp_path: Path,
) -> None:
    service = service_for(tmp_path, ScriptedEngine(), auto_aliases=False)
    plan = asyncio.run(service.plan(ImageGenerationRequest(prompt="a")))

    assert isinstance(plan, GenerationPlan)
    assert (plan.request.model, plan.spec.name) == ("m", "m")
    assert plan.size == Size(1024, 1024)


def test_a_stream_sends_only_the_drawing_not_the_engines_acceptance(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    events = streamed(service_for(tmp_path, engine), "a")

    assert [event.event for event in events] == ["image_generation.completed"]
    assert events[0].data["size"] == "auto"  # echoed as requested, as OpenAI does
    assert engine.closed == 1


def test_an_engine_that_does_not_say_accepted_loses_no_event(tmp_path: Path) -> None:
    events = streamed(service_for(tmp_path, ScriptedEngine(accepts=False)), "a")

    assert [event.event for event in events] == ["image_generation.completed"]


def test_a_refusal_is_raised_by_opening_the_stream(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    with pytest.raises(QueueFull):
        streamed(service_for(tmp_path, engine), "busy")
    assert engine.closed == 1


class ReportingEngine(ScriptedEngine):
    """Reports model "m" loaded with a step-distilled model's own steps and guidance,
    and counts the questions."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    async def models(self) -> list[ModelStatus]:
        self.asked += 1
        return [ModelStatus("m", loaded=True,
                            defaults=ModelDefaults(steps=4, guidance_scale=0.0, hd_steps=4))]


def planned_knobs(service: ImageService, **body: object) -> tuple[int, float]:
    plan = asyncio.run(service.plan(ImageGenerationRequest(model="m", prompt="a", **body)))  # type: ignore[arg-type]
    assert isinstance(plan, GenerationPlan)
    return plan.params.num_inference_steps, plan.params.guidance_scale


def test_a_model_its_spec_leaves_steps_and_guidance_to_is_planned_with_its_own(
        tmp_path: Path) -> None:
    service = service_for(tmp_path, ReportingEngine())
    assert [planned_knobs(service, quality=quality) for quality in ("medium", "high", "low")
            ] == [(4, 0.0), (4, 0.0), (2, 0.0)]
    assert planned_knobs(service, num_inference_steps=6, guidance_scale=1.5) == (6, 1.5)


def test_a_spec_that_sets_steps_and_guidance_is_planned_without_asking_the_engine(
        tmp_path: Path) -> None:
    engine = ReportingEngine()
    spec = ModelSpec(name="m", source="org/m", steps=10, guidance_scale=5.0)
    store = LocalImageStore(tmp_path, 60, UrlSigner(b"k" * 32, 60), link_path="/images")
    service = ImageService(ModelCatalog.from_settings(Settings(models=(spec,))), engine,
                           store)
    assert planned_knobs(service) == (10, 5.0)
    assert engine.asked == 0

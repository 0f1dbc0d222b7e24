"""RayEngine turns Ray's failures into engine errors and cancels what nobody waits for.

The handles here are stand-ins with Ray's own exception classes; tests/e2e/test_ray.py
runs the real thing on a local Ray instance.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from PIL import Image
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from diffuserve.deploy.ray_engine import RayEngine, adapter_set_id
from diffuserve.engine.errors import (
    DeadlineExceeded,
    Draining,
    GenerationFailed,
    QueueFull,
    ResidencyRefused,
    UnknownModel,
    UnsupportedTask,
    WorkerLost,
)
from diffuserve.engine.types import (
    Accepted,
    GenerationParams,
    ModelStatus,
    Progress,
    Result,
    Task,
)

PARAMS = GenerationParams(prompt="a", negative_prompt=None, width=8, height=8,
                          num_inference_steps=2, guidance_scale=1.0, seeds=(1,))
RESULT = Result((Image.new("RGB", (8, 8)),), queued_seconds=0.0, run_seconds=0.0)


class FakeResponse:
    """What ``handle.options(stream=True).stream.remote(task)`` returns."""

    def __init__(self, events: list[Any], *, hang: bool = False) -> None:
        self.events = events
        self.hang = hang
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        for event in self.events:
            if isinstance(event, BaseException):
                raise event
            yield event
        if self.hang:
            await asyncio.sleep(3600)

    def cancel(self) -> None:
        # As Ray's does: cancelling a call that failed re-raises its failure.
        self.cancelled = True
        for event in self.events:
            if isinstance(event, BaseException):
                raise event


class FakeMethod:
    def __init__(self, call: Any) -> None:
        self._call = call

    def remote(self, *args: Any) -> Any:
        return self._call(*args)


class FakeHandle:
    def __init__(self, response: FakeResponse, status: Any = None) -> None:
        self.response = response
        self.tasks: list[Task] = []
        #: The options of every call, in order.
        self.calls: list[dict[str, Any]] = []
        self.stream = FakeMethod(self._stream)
        self._status = status
        self.status = FakeMethod(self._status_call)

    def options(self, **options: Any) -> FakeHandle:
        self.calls.append(options)
        return self

    def _stream(self, task: Task) -> FakeResponse:
        self.tasks.append(task)
        return self.response

    async def _status_call(self) -> list[ModelStatus]:
        if isinstance(self._status, BaseException):
            raise self._status
        if self._status == "hang":
            await asyncio.sleep(3600)
        if isinstance(self._status, ModelStatus):
            # As Ray hands it over: pickled on the replica, unpickled here.
            return [pickle.loads(pickle.dumps(self._status))]
        return [ModelStatus("emoji", loaded=True, device="cpu")]


def engine_for(response: FakeResponse, **kwargs: Any) -> tuple[RayEngine, FakeHandle]:
    handle = FakeHandle(response, **kwargs)
    return RayEngine({"emoji": handle}, max_queued=16), handle  # type: ignore[dict-item]


async def collect(engine: RayEngine, task: Task) -> list[Any]:
    return [event async for event in engine.stream(task)]


def wrapped(cause: Exception) -> RayTaskError:
    """An exception raised on a replica, as Ray hands it to the caller: a subclass of
    both its envelope and the cause."""
    return RayTaskError("stream", "Traceback: ...", cause).as_instanceof_cause()


def test_events_from_the_replica_pass_through_in_order() -> None:
    engine, handle = engine_for(FakeResponse([Accepted(), Progress(1, 2), RESULT]))
    task = Task(model="emoji", params=PARAMS, progress=True)

    events = asyncio.run(collect(engine, task))

    assert events == [Accepted(), Progress(1, 2), RESULT]
    assert handle.tasks == [task]
    assert handle.calls == [{"stream": True}]
    assert not handle.response.cancelled


def test_an_adapter_set_has_one_id_everywhere_and_each_set_its_own() -> None:
    pixel = (("pixel", 0.8),)

    # The same in every process and release (a digest, not Python's salted hash).
    assert adapter_set_id(pixel) == adapter_set_id((("pixel", 0.8),)) \
        == "lora-9a36009271c71d25b2d3"
    ids = {adapter_set_id(lora) for lora in [
        pixel, (("pixel", 0.5),), (("pixel", 1.0),), (("ink", 0.8),),
        (("ink", 0.8), ("pixel", 0.8)), (("ink", 1.0), ("pixel", 0.8))]}
    assert len(ids) == 6
    assert adapter_set_id(()) is None


def test_a_task_with_adapters_asks_ray_for_a_replica_that_has_them() -> None:
    engine, handle = engine_for(FakeResponse([RESULT]))
    stacked = (("ink", 1.0), ("pixel", 0.8))

    for lora in [stacked, (), stacked]:
        asyncio.run(collect(engine, Task(model="emoji", params=replace(PARAMS, lora=lora))))

    # Without adapters no id: Ray sends the task to any replica.
    assert handle.calls == [
        {"stream": True, "multiplexed_model_id": adapter_set_id(stacked)},
        {"stream": True},
        {"stream": True, "multiplexed_model_id": adapter_set_id(stacked)}]


def test_rays_back_pressure_is_a_full_queue_with_a_wait() -> None:
    engine, _ = engine_for(FakeResponse([BackPressureError(
        num_queued_requests=16, max_queued_requests=16, retry_after_s=2.5)]))

    with pytest.raises(QueueFull) as caught:
        asyncio.run(collect(engine, Task(model="emoji", params=PARAMS)))

    assert (caught.value.limit, caught.value.retry_after) == (16, 3)


def test_an_engine_error_raised_on_the_replica_arrives_as_itself() -> None:
    engine, _ = engine_for(FakeResponse([wrapped(UnsupportedTask("emoji", "edit tasks"))]))

    with pytest.raises(UnsupportedTask) as caught:
        asyncio.run(collect(engine, Task(model="emoji", params=PARAMS)))

    assert type(caught.value) is UnsupportedTask
    assert caught.value.kind == "edit tasks"


def test_a_bug_on_the_replica_is_a_failed_generation_naming_only_its_type() -> None:
    engine, _ = engine_for(FakeResponse([wrapped(KeyError("/secret/path"))]))

    with pytest.raises(GenerationFailed) as caught:
        asyncio.run(collect(engine, Task(model="emoji", params=PARAMS)))

    assert "secret" not in str(caught.value)


def test_a_replica_that_dies_mid_task_is_a_lost_worker_and_the_call_is_cancelled() -> None:
    engine, handle = engine_for(FakeResponse([Progress(1, 4), ActorDiedError()]))

    with pytest.raises(WorkerLost):
        asyncio.run(collect(engine, Task(model="emoji", params=PARAMS, progress=True)))

    assert handle.response.cancelled


def test_closing_the_stream_cancels_the_replicas_work() -> None:
    engine, handle = engine_for(FakeResponse([Accepted(), Progress(1, 4)], hang=True))

    async def leave_after_first_event() -> None:
        stream = engine.stream(Task(model="emoji", params=PARAMS, progress=True))
        assert await anext(stream) == Accepted()  # type: ignore[call-overload]
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(leave_after_first_event())

    assert handle.response.cancelled


def test_a_replica_that_never_answers_is_overload_once_the_deadline_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("diffuserve.deploy.ray_engine.DEADLINE_GRACE_SECONDS", 0.0)
    engine, handle = engine_for(FakeResponse([], hang=True))
    task = Task(model="emoji", params=PARAMS, deadline=time.time() + 0.2)

    with pytest.raises(DeadlineExceeded) as caught:
        asyncio.run(collect(engine, task))

    assert not caught.value.started
    assert handle.response.cancelled


def test_unknown_models_and_a_draining_engine_are_refused_before_any_call() -> None:
    engine, handle = engine_for(FakeResponse([RESULT]))

    with pytest.raises(UnknownModel):
        asyncio.run(collect(engine, Task(model="other", params=PARAMS)))
    engine.drain()
    with pytest.raises(Draining):
        asyncio.run(collect(engine, Task(model="emoji", params=PARAMS)))
    assert handle.tasks == []


@pytest.mark.parametrize(("status", "loaded"), [
    (None, True), (ActorDiedError(), False), ("hang", False)])
def test_a_model_is_ready_only_when_a_replica_says_it_is_loaded(
        monkeypatch: pytest.MonkeyPatch, status: Any, loaded: bool) -> None:
    monkeypatch.setattr("diffuserve.deploy.ray_engine.STATUS_TIMEOUT_SECONDS", 0.1)
    engine, _ = engine_for(FakeResponse([]), status=status)

    statuses = asyncio.run(engine.models())

    assert [(model.name, model.loaded) for model in statuses] == [("emoji", loaded)]
    assert asyncio.run(engine.ready()) is loaded


def test_what_a_replica_knows_of_its_loaded_model_reaches_the_service() -> None:
    replica = ModelStatus("emoji", loaded=True, device="cuda:0", max_input_images=3,
                          tasks=("generate", "edit"))
    engine, _ = engine_for(FakeResponse([]), status=replica)

    assert asyncio.run(engine.models()) == [replica]


def test_one_models_status_asks_only_its_own_replicas() -> None:
    replica = ModelStatus("emoji", loaded=True, max_input_images=10, tasks=("edit",))
    engine, _ = engine_for(FakeResponse([]), status=replica)

    assert asyncio.run(engine.model("emoji")) == replica
    assert asyncio.run(engine.model("other")) is None


def test_models_are_not_loaded_or_unloaded_on_request_under_ray_and_say_why() -> None:
    engine, _ = engine_for(FakeResponse([RESULT]))
    for action in (engine.load_model, engine.unload_model):
        with pytest.raises(ResidencyRefused, match="replicas Ray starts and stops"):
            asyncio.run(action("emoji"))


def test_a_replicas_model_state_arrives_whole() -> None:
    status = ModelStatus("emoji", loaded=True, device="cuda", dtype="bfloat16",
                         quantize="int8", weight_bytes=12_345)
    engine, _ = engine_for(FakeResponse([RESULT]), status=status)
    assert asyncio.run(engine.model("emoji")) == status

"""LocalEngine through the EngineClient seam: tasks in, progress and results out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import pytest
from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.base import Backend
from diffuserve.engine.errors import (
    DeadlineExceeded,
    Draining,
    ModelLoadFailed,
    ModelNotLoaded,
    PromptTooLong,
    TooManyImages,
    UnknownModel,
    UnsupportedTask,
)
from diffuserve.engine.local.engine import INLINE_COUNT_CHARS, LocalEngine
from diffuserve.engine.types import (
    Accepted,
    GenerationParams,
    ModelDefaults,
    Progress,
    Result,
    StepCallback,
    Task,
    TaskKind,
)
from tests.support.fakes import FakeBackend, SlowLoadingBackend

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 30))  # type: ignore[arg-type]


def params(seed: int = 0, steps: int = 3) -> GenerationParams:
    return GenerationParams(prompt=f"p{seed}", negative_prompt=None, width=32, height=32,
                            num_inference_steps=steps, guidance_scale=1.0, seeds=(seed,))


class SteppingBackend(FakeBackend):
    """Calls ``on_step`` for each step, ``step_delay`` apart, recording interruptions."""

    def __init__(self, step_delay: float = 0.0) -> None:
        super().__init__()
        self.step_delay = step_delay
        self.started = threading.Event()
        self.interrupted = threading.Event()

    def generate(self, p: GenerationParams, on_step: StepCallback | None = None
                 ) -> list[Image.Image]:
        self.started.set()
        for step in range(p.num_inference_steps):
            time.sleep(self.step_delay)
            if on_step is not None:
                try:
                    on_step(step + 1, p.num_inference_steps)
                except BaseException:
                    self.interrupted.set()
                    raise
        return super().generate(p)


def engine_with(backend: Backend, **options: object) -> LocalEngine:
    return LocalEngine([ModelSpec(name="m", source="m")], {"m": backend},  # type: ignore[arg-type]
                       **options)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def test_a_task_streams_progress_then_its_result() -> None:
    async def scenario() -> list[object]:
        engine = engine_with(SteppingBackend())
        await engine.start()
        events = [event async for event in engine.stream(
            Task(model="m", params=params(steps=3), progress=True))]
        await engine.stop()
        return events

    events = run(scenario)
    assert events[:-1] == [Accepted(), Progress(1, 3), Progress(2, 3), Progress(3, 3)]
    result = events[-1]
    assert isinstance(result, Result)
    assert [image.size for image in result.images] == [(32, 32)]
    assert result.run_seconds >= 0 and result.batch_images == 1


def test_without_asking_a_task_gets_only_its_result() -> None:
    async def scenario() -> list[object]:
        engine = engine_with(SteppingBackend())
        events = [event async for event in engine.stream(Task(model="m", params=params()))]
        await engine.stop()
        return events

    assert [type(event) for event in run(scenario)] == [Result]


class CountingBackend(SteppingBackend):
    """Records the thread each prompt is counted on."""

    def __init__(self) -> None:
        super().__init__()
        self.counted_on: list[str] = []

    def count_tokens(self, text: str) -> int:
        self.counted_on.append(threading.current_thread().name)
        return super().count_tokens(text)


@pytest.mark.parametrize(("words", "on_the_loop"), [(3, True), (200, False)])
def test_prompt_tokens_short_prompts_on_the_loop_long_ones_on_a_thread(
        words: int, on_the_loop: bool) -> None:
    prompt = " ".join(["apple"] * words)
    backend = CountingBackend()

    async def scenario() -> tuple[Result, str]:
        engine = engine_with(backend)
        task = Task(model="m", params=GenerationParams(
            prompt=prompt, negative_prompt=None, width=32, height=32,
            num_inference_steps=1, guidance_scale=1.0, seeds=(0,)))
        (result,) = [event async for event in engine.stream(task)]
        await engine.stop()
        assert isinstance(result, Result)
        return result, threading.current_thread().name

    result, loop_thread = run(scenario)
    assert result.prompt_tokens == words  # the same count either way
    assert (len(prompt) <= INLINE_COUNT_CHARS) is on_the_loop
    assert (backend.counted_on == [loop_thread]) is on_the_loop


def test_closing_the_stream_stops_the_running_task() -> None:
    backend = SteppingBackend(step_delay=0.05)

    async def scenario() -> None:
        engine = engine_with(backend)
        stream = engine.stream(Task(model="m", params=params(steps=200), progress=True))
        assert isinstance(await stream.__anext__(), Accepted)
        assert isinstance(await stream.__anext__(), Progress)
        await stream.aclose()  # type: ignore[attr-defined]
        await until(backend.interrupted.is_set)
        # The device is free again at once.
        result = await engine.run(Task(model="m", params=params(seed=1, steps=1)))
        assert len(result.images) == 1
        await engine.stop()

    run(scenario)


def test_a_deadline_before_the_turn_comes_says_it_never_started() -> None:
    backend = SteppingBackend(step_delay=0.05)

    async def scenario() -> DeadlineExceeded:
        engine = engine_with(backend)
        blocker = asyncio.ensure_future(engine.run(Task(model="m", params=params(steps=20))))
        await until(backend.started.is_set)
        with pytest.raises(DeadlineExceeded) as caught:
            await engine.run(Task(model="m", params=params(seed=1),
                                  deadline=time.time() + 0.1))
        await blocker
        await engine.stop()
        return caught.value

    error = run(scenario)
    assert error.started is False
    assert error.retry_after >= 1


def test_a_deadline_while_drawing_says_it_started() -> None:
    async def scenario() -> DeadlineExceeded:
        engine = engine_with(SteppingBackend(step_delay=0.05))
        with pytest.raises(DeadlineExceeded) as caught:
            await engine.run(Task(model="m", params=params(steps=40),
                                  deadline=time.time() + 0.3))
        await engine.stop()
        return caught.value

    assert run(scenario).started is True


def test_abort_refuses_running_work_at_once() -> None:
    backend = SteppingBackend(step_delay=0.05)

    async def scenario() -> None:
        engine = engine_with(backend)
        running = asyncio.ensure_future(engine.run(Task(model="m", params=params(steps=400))))
        await until(backend.started.is_set)
        engine.drain()
        with pytest.raises(Draining):
            await engine.run(Task(model="m", params=params(seed=2)))
        engine.abort()
        with pytest.raises(Draining):
            await running
        await until(backend.interrupted.is_set)
        await engine.stop()

    run(scenario)


def test_unknown_and_unloaded_models_are_refused() -> None:
    async def scenario() -> None:
        engine = engine_with(FakeBackend(loaded=False))
        with pytest.raises(UnknownModel):
            await engine.run(Task(model="other", params=params()))
        with pytest.raises(ModelNotLoaded):
            await engine.run(Task(model="m", params=params()))
        assert not await engine.ready()
        await engine.stop()

    run(scenario)


def test_models_load_in_the_background_and_failures_are_reported() -> None:
    slow = SlowLoadingBackend()
    failures: list[str] = []

    class Broken(FakeBackend):
        def load(self) -> None:
            raise ModelLoadFailed("Could not load model 'b': that folder does not exist.")

    async def scenario() -> None:
        engine = LocalEngine(
            [ModelSpec(name="a", source="a"), ModelSpec(name="b", source="b")],
            {"a": slow, "b": Broken(loaded=False)}, on_load_failure=failures.append)
        await engine.start()
        assert [model.loaded for model in await engine.models()] == [False, False]
        slow.release.set()
        await until(lambda: bool(failures))
        assert [model.loaded for model in await engine.models()] == [True, False]
        await engine.stop()

    run(scenario)
    assert failures == ["Could not load model 'b': that folder does not exist."]


def test_load_all_loads_only_what_is_not_loaded() -> None:
    loaded, unloaded = FakeBackend(), SlowLoadingBackend()
    unloaded.release.set()
    engine = LocalEngine([ModelSpec(name="a", source="a"), ModelSpec(name="b", source="b")],
                         {"a": loaded, "b": unloaded})

    engine.load_all()

    assert asyncio.run(engine.ready())


def edit_params(references: int, prompt: str = "p") -> GenerationParams:
    image = Image.new("RGB", (32, 32))
    return GenerationParams(prompt=prompt, negative_prompt=None, width=32, height=32,
                            num_inference_steps=1, guidance_scale=1.0, seeds=(0,),
                            image=image, references=(image,) * references)


class EditingFake(FakeBackend):
    tasks = frozenset({TaskKind.GENERATE, TaskKind.EDIT})


def test_an_edit_of_more_images_than_the_model_takes_is_refused_before_it_queues() -> None:
    backend = EditingFake()
    backend.max_input_images = 3

    async def scenario() -> None:
        engine = engine_with(backend)
        await engine.run(Task(model="m", params=edit_params(2), kind=TaskKind.EDIT))
        with pytest.raises(TooManyImages) as refused:
            await engine.run(Task(model="m", params=edit_params(3), kind=TaskKind.EDIT))
        assert (refused.value.model, refused.value.limit, refused.value.given) == ("m", 3, 4)
        await engine.stop()

    run(scenario)
    assert [len(call.references) for call in backend.calls] == [2]


def test_a_model_that_takes_one_image_refuses_any_reference() -> None:
    async def scenario() -> None:
        engine = engine_with(EditingFake())
        with pytest.raises(TooManyImages):
            await engine.run(Task(model="m", params=edit_params(1), kind=TaskKind.EDIT))
        await engine.stop()

    run(scenario)


class InpaintOnlyFake(EditingFake):
    """Edits only where a mask says, as a FLUX.1 Fill model does: its own check says so."""

    def check(self, params: GenerationParams) -> None:
        if params.mask is None:
            raise UnsupportedTask("m", "edits without a mask")


def test_what_the_backends_check_refuses_never_reaches_the_queue() -> None:
    """Refused at submit, even while the engine drains (a task that reached the queue
    would be refused as Draining); the backend draws nothing for it."""
    backend = InpaintOnlyFake()
    masked = replace(edit_params(0), mask=Image.new("L", (32, 32), 255))

    async def scenario() -> None:
        engine = engine_with(backend)
        await engine.run(Task(model="m", params=masked, kind=TaskKind.EDIT))
        engine.drain()
        with pytest.raises(UnsupportedTask, match="without a mask"):
            await engine.run(Task(model="m", params=edit_params(0), kind=TaskKind.EDIT))
        with pytest.raises(Draining):
            await engine.run(Task(model="m", params=masked, kind=TaskKind.EDIT))
        await engine.stop()

    run(scenario)
    assert [call.mask is not None for call in backend.calls] == [True]


def test_a_prompt_longer_than_the_text_encoders_window_is_refused_in_its_tokens() -> None:
    backend = FakeBackend()
    backend.max_prompt_tokens = 5

    async def scenario() -> None:
        engine = engine_with(backend)
        done = await engine.run(Task(model="m", params=replace(params(), prompt="a b c d e")))
        assert done.prompt_tokens == 5
        with pytest.raises(PromptTooLong) as refused:
            await engine.run(Task(model="m", params=replace(params(), prompt="a b c d e, f")))
        assert (refused.value.limit, refused.value.given) == (5, 7)  # the comma counts
        # A long one is counted off the loop, and refused all the same.
        with pytest.raises(PromptTooLong):
            await engine.run(Task(model="m", params=replace(
                params(), prompt="word " * INLINE_COUNT_CHARS)))
        await engine.stop()

    run(scenario)
    assert len(backend.calls) == 1


def test_without_a_known_window_any_prompt_is_drawn() -> None:
    backend = FakeBackend()

    async def scenario() -> None:
        engine = engine_with(backend)
        await engine.run(Task(model="m", params=replace(params(), prompt="word " * 2000)))
        await engine.stop()

    run(scenario)
    assert len(backend.calls) == 1


def test_models_report_their_image_limit_tasks_and_defaults_once_loaded() -> None:
    slow = SlowLoadingBackend()
    slow.max_input_images = 10
    slow.tasks = frozenset({TaskKind.EDIT, TaskKind.GENERATE})
    slow.defaults = ModelDefaults(steps=4, guidance_scale=0.0)

    async def scenario() -> None:
        engine = engine_with(slow)
        await engine.start()
        (loading,) = await engine.models()
        assert (loading.loaded, loading.max_input_images, loading.tasks,
                loading.defaults) == (False, None, (), None)
        slow.release.set()
        await until(lambda: slow.loaded)
        (loaded,) = await engine.models()
        assert (loaded.loaded, loaded.device) == (True, "fake")
        assert (loaded.max_input_images, loaded.tasks) == (10, ("generate", "edit"))
        assert loaded.defaults == ModelDefaults(steps=4, guidance_scale=0.0)
        await engine.stop()

    run(scenario)

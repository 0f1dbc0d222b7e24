"""Which models are in memory: loads on demand, the least recently used idle model
unloaded for room, idle unloads, the memory budget, and an admin's load and unload —
through LocalEngine, with fakes that record their loads and unloads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest

from diffuserve.config import ModelSpec
from diffuserve.engine.errors import (
    DeadlineExceeded,
    ModelLoadFailed,
    ModelNotLoaded,
    ResidencyRefused,
)
from diffuserve.engine.local.engine import LocalEngine
from diffuserve.engine.types import GenerationParams, Result, Task
from tests.support.fakes import FakeBackend, ResidentBackend

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 30))  # type: ignore[arg-type]


def params(seed: int = 0) -> GenerationParams:
    return GenerationParams(prompt=f"p{seed}", negative_prompt=None, width=16, height=16,
                            num_inference_steps=1, guidance_scale=1.0, seeds=(seed,))


def task(model: str, seed: int = 0, timeout: float | None = None) -> Task:
    return Task(model=model, params=params(seed),
                deadline=None if timeout is None else time.time() + timeout)


def engine_of(backends: dict[str, ResidentBackend | FakeBackend], *,
              idle: dict[str, float] | None = None, at_start: Sequence[str] = (),
              **options: object) -> LocalEngine:
    specs = [ModelSpec(name=name, source=name,
                       idle_unload_seconds=(idle or {}).get(name)) for name in backends]
    return LocalEngine(specs, backends, at_start=at_start, **options)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def loaded(engine: LocalEngine) -> dict[str, bool]:
    return {name: engine.backend(name).loaded for name in ("a", "b", "c")}


def test_three_models_in_two_places_each_served_in_turn_the_least_recently_used_unloaded(
) -> None:
    log: list[str] = []
    backends = {name: ResidentBackend(name, log) for name in "abc"}

    async def scenario() -> None:
        engine = engine_of(backends, max_loaded_models=2)  # type: ignore[arg-type]
        await engine.start()
        for model in "abcab":
            result = await engine.run(task(model))
            assert len(result.images) == 1
        # a, b loaded; c: unload a (least recently used); a: unload b; b: unload c.
        assert log == ["load a", "load b", "unload a", "load c", "unload b", "load a",
                       "unload c", "load b"]
        assert loaded(engine) == {"a": True, "b": True, "c": False}
        await engine.stop()

    run(scenario)


def test_using_a_model_makes_it_the_most_recently_used() -> None:
    log: list[str] = []
    backends = {name: ResidentBackend(name, log) for name in "abc"}

    async def scenario() -> None:
        engine = engine_of(backends, max_loaded_models=2)  # type: ignore[arg-type]
        for model in "aba":  # a used last: b is the one to go
            await engine.run(task(model))
        await engine.run(task("c"))
        assert log[-2:] == ["unload b", "load c"]
        await engine.stop()

    run(scenario)


def test_a_model_in_use_is_never_unloaded_the_load_waits_for_it_to_be_idle() -> None:
    log: list[str] = []
    backends = {"a": ResidentBackend("a", log, delay=0.3), "b": ResidentBackend("b", log)}

    async def scenario() -> None:
        engine = engine_of(backends, max_loaded_models=1)  # type: ignore[arg-type]
        busy = asyncio.ensure_future(engine.run(task("a")))
        await until(lambda: bool(backends["a"].calls))
        waiting = asyncio.ensure_future(engine.run(task("b")))
        await asyncio.sleep(0.05)
        assert log == ["load a"]  # b waits: a is drawing
        await asyncio.gather(busy, waiting)
        assert log == ["load a", "unload a", "load b"]
        await engine.stop()

    run(scenario)


def test_concurrent_requests_for_an_unloaded_model_share_one_load_and_are_all_served(
) -> None:
    log: list[str] = []
    gate = threading.Event()
    backends = {"a": ResidentBackend("a", log, gate=gate)}

    async def scenario() -> list[Result]:
        engine = engine_of(backends)  # type: ignore[arg-type]
        waiting = [asyncio.ensure_future(engine.run(task("a", seed))) for seed in range(6)]
        await asyncio.sleep(0.05)
        assert not any(future.done() for future in waiting)
        gate.set()
        results = await asyncio.gather(*waiting)
        await engine.stop()
        return results

    results = run(scenario)
    assert log == ["load a"]
    assert len(results) == 6 and all(len(result.images) == 1 for result in results)
    # The wait for the load counts as time in the queue.
    assert min(result.queued_seconds for result in results) >= 0.04


def test_a_request_whose_deadline_passes_during_the_load_is_refused_and_the_load_goes_on(
) -> None:
    log: list[str] = []
    gate = threading.Event()
    backends = {"a": ResidentBackend("a", log, gate=gate)}

    async def scenario() -> None:
        engine = engine_of(backends)  # type: ignore[arg-type]
        with pytest.raises(DeadlineExceeded) as refused:
            await engine.run(task("a", timeout=0.1))
        assert not refused.value.started  # overloaded: a 429 with Retry-After, not a 5xx
        gate.set()
        await until(lambda: backends["a"].loaded)
        await engine.run(task("a"))
        assert log == ["load a"]
        await engine.stop()

    run(scenario)


def test_a_failed_load_fails_its_waiters_and_the_next_request_tries_again() -> None:
    log: list[str] = []
    backends = {"a": ResidentBackend("a", log, fail_loads=1)}

    async def scenario() -> None:
        engine = engine_of(backends)  # type: ignore[arg-type]
        outcomes = await asyncio.gather(engine.run(task("a", 1)), engine.run(task("a", 2)),
                                        return_exceptions=True)
        assert all(isinstance(outcome, ModelLoadFailed) for outcome in outcomes)
        assert "the disk is gone" in str(outcomes[0])
        await engine.run(task("a"))
        assert log == ["load a"]
        await engine.stop()

    run(scenario)


def test_a_model_loading_at_start_asks_requests_to_retry_until_it_is_loaded() -> None:
    log: list[str] = []
    gate = threading.Event()
    backends = {"a": ResidentBackend("a", log, gate=gate),
                "b": ResidentBackend("b", log)}

    async def scenario() -> None:
        engine = engine_of(backends, at_start=["a"])  # type: ignore[arg-type]
        await engine.start()
        with pytest.raises(ModelNotLoaded):
            await engine.run(task("a"))
        assert not await engine.ready()
        # A model that does not load at start loads on its first request meanwhile.
        await engine.run(task("b"))
        assert not await engine.ready()  # ready counts only the models loaded at start
        gate.set()
        await until(lambda: backends["a"].loaded)
        assert await engine.ready()
        await engine.run(task("a"))
        # Unloaded later, it loads again on demand (and /ready stays ready).
        await engine.unload_model("a")
        assert await engine.ready()
        await engine.run(task("a"))
        assert log == ["load b", "load a", "unload a", "load a"]
        await engine.stop()

    run(scenario)


def test_an_idle_model_is_unloaded_after_its_idle_unload_seconds_and_loaded_again() -> None:
    log: list[str] = []
    backends = {"a": ResidentBackend("a", log), "b": ResidentBackend("b", log)}

    async def scenario() -> None:
        engine = engine_of(backends, idle={"a": 0.3})  # type: ignore[arg-type]
        await engine.start()
        await engine.run(task("a"))
        await engine.run(task("b"))
        await until(lambda: not backends["a"].loaded)
        assert backends["b"].loaded  # no idle_unload_seconds: stays
        await engine.run(task("a"))
        assert log == ["load a", "load b", "unload a", "load a"]
        assert engine.metrics.model_unloads.labels("a", "idle")._value.get() == 1
        await engine.stop()

    run(scenario)


def test_a_busy_model_is_not_unloaded_for_being_idle_too_long() -> None:
    log: list[str] = []
    backends = {"a": ResidentBackend("a", log, delay=0.6)}

    async def scenario() -> None:
        engine = engine_of(backends, idle={"a": 0.25})  # type: ignore[arg-type]
        await engine.start()
        await engine.run(task("a"))  # drawing 0.6 s: longer than its idle time
        assert log == ["load a"]
        await until(lambda: not backends["a"].loaded)
        await engine.stop()

    run(scenario)


def test_the_memory_budget_unloads_the_least_recently_used_until_the_weights_fit() -> None:
    log: list[str] = []
    backends = {"a": ResidentBackend("a", log, weights=400),
                "b": ResidentBackend("b", log, weights=400),
                "c": ResidentBackend("c", log, weights=700)}

    async def scenario() -> None:
        engine = engine_of(backends, memory_budget_bytes=1000)  # type: ignore[arg-type]
        await engine.run(task("a"))
        await engine.run(task("b"))  # 800 of 1000
        await engine.run(task("c"))  # 700 more, size not known before: both others go
        assert loaded(engine) == {"a": False, "b": False, "c": True}
        assert log == ["load a", "load b", "load c", "unload a", "unload b"]
        await engine.run(task("a"))  # 700 + 400 > 1000: c goes first this time
        assert log[-2:] == ["unload c", "load a"]
        await engine.stop()

    run(scenario)


def test_an_admin_unload_waits_for_the_requests_using_the_model() -> None:
    log: list[str] = []
    backends = {"a": ResidentBackend("a", log, delay=0.3)}

    async def scenario() -> None:
        engine = engine_of(backends)  # type: ignore[arg-type]
        drawing = asyncio.ensure_future(engine.run(task("a")))
        await until(lambda: bool(backends["a"].calls))
        status = await engine.unload_model("a")
        assert drawing.done() and len((await drawing).images) == 1
        assert (status.loaded, status.weight_bytes) == (False, None)
        status = await engine.load_model("a")
        assert (status.loaded, status.weight_bytes) == (True, 1000)
        assert log == ["load a", "unload a", "load a"]
        await engine.stop()

    run(scenario)


def test_a_backend_that_cannot_unload_is_refused_and_never_chosen_to_make_room() -> None:
    log: list[str] = []
    backends = {"a": FakeBackend(), "b": ResidentBackend("b", log),
                "c": ResidentBackend("c", log)}

    async def scenario() -> None:
        engine = engine_of(backends, max_loaded_models=2)  # type: ignore[arg-type]
        with pytest.raises(ResidencyRefused, match="cannot unload"):
            await engine.unload_model("a")
        await engine.run(task("b"))
        await engine.run(task("a"))
        await engine.run(task("c"))  # a (least recently used) cannot go: b goes
        assert log == ["load b", "unload b", "load c"]
        await engine.stop()

    run(scenario)


def test_a_load_that_no_unload_could_ever_make_room_for_is_refused_not_left_waiting(
) -> None:
    log: list[str] = []
    backends = {"a": FakeBackend(), "b": ResidentBackend("b", log)}

    async def scenario() -> None:
        engine = engine_of(backends, max_loaded_models=1)  # type: ignore[arg-type]
        with pytest.raises(ModelLoadFailed, match="no loaded model can be unloaded"):
            await engine.run(task("b", timeout=20))
        assert log == []
        await engine.stop()

    run(scenario)

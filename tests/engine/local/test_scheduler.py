"""The scheduler on fake backends: batching, fairness, backpressure, cancellation, faults."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest
from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.errors import (
    ContentFlagged,
    Draining,
    EngineError,
    GenerationFailed,
    OutOfMemory,
    QueueFull,
)
from diffuserve.engine.local.device import DeviceSlot
from diffuserve.engine.local.engine import LocalEngine
from diffuserve.engine.local.scheduler import Job, ModelScheduler
from diffuserve.engine.types import GenerationParams, StepCallback
from diffuserve.metrics import Metrics
from tests.support.fakes import FakeBackend

T = TypeVar("T")


def params(seed: int = 0, n: int = 1, size: int = 64, steps: int = 2) -> GenerationParams:
    return GenerationParams(prompt=f"p{seed}", negative_prompt=None, width=size, height=size,
                            num_inference_steps=steps, guidance_scale=5.0,
                            seeds=tuple(range(seed, seed + n)))


class GatedBackend(FakeBackend):
    """Records each batched call; the first call waits for ``release`` so that the
    queue fills behind it. Calls ``on_step`` ``steps`` times, ``step_delay`` apart."""

    def __init__(self, steps: int = 1, step_delay: float = 0.0) -> None:
        super().__init__()
        self.release = threading.Event()
        self.running = threading.Event()
        self.batches: list[list[GenerationParams]] = []
        self.max_images_seen: list[int] = []
        self.steps = steps
        self.step_delay = step_delay
        #: Every step callback made, in order (the step number each time).
        self.steps_taken: list[int] = []

    def generate_batch(
        self, requests: Sequence[GenerationParams], max_images: int,
        on_step: StepCallback | None = None,
    ) -> list[list[Image.Image] | EngineError]:
        self.batches.append(list(requests))
        self.max_images_seen.append(max_images)
        self.running.set()
        self.release.wait(10)
        for step in range(self.steps):
            time.sleep(self.step_delay)
            if on_step is not None:
                self.steps_taken.append(step + 1)
                on_step(step + 1, self.steps)
        return [self.generate(p) for p in requests]


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


def make(backend: FakeBackend, *, max_queue: int = 16, max_batch_images: int = 4,
         batching: bool = True) -> ModelScheduler:
    scheduler = ModelScheduler("m", backend, DeviceSlot("fake", backend.workers), Metrics(),
                               max_queue=max_queue, max_batch_images=max_batch_images,
                               batching=batching)
    scheduler.start()
    return scheduler


def submit(scheduler: ModelScheduler, p: GenerationParams, client: str = "a") -> Job:
    return scheduler.submit(p, client, time.monotonic() + 60, f"req-{p.seeds[0]}")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def block_device(scheduler: ModelScheduler, backend: GatedBackend) -> Job:
    """Occupy the device with one request so that the next ones queue."""
    first = submit(scheduler, params(seed=1000), client="blocker")
    await until(backend.running.is_set)
    return first


def test_compatible_requests_share_one_call_and_get_their_own_images() -> None:
    backend = GatedBackend()

    async def scenario() -> list[list[Image.Image]]:
        scheduler = make(backend)
        first = await block_device(scheduler, backend)
        jobs = [submit(scheduler, params(seed=i * 10, n=2 if i == 0 else 1), client=f"k{i}")
                for i in range(3)]
        backend.release.set()
        await first.future
        results = [await job.future for job in jobs]
        await scheduler.stop()
        return results

    results = run(scenario)
    assert [len(batch) for batch in backend.batches] == [1, 3]
    assert [len(images) for images in results] == [2, 1, 1]
    # Each request gets images drawn from its own seeds.
    assert [image.getpixel((0, 0))[0] for image in results[1]] == [(10 * 37) % 256]


def test_batches_hold_at_most_max_batch_images() -> None:
    backend = GatedBackend()

    async def scenario() -> None:
        scheduler = make(backend, max_batch_images=3)
        first = await block_device(scheduler, backend)
        jobs = [submit(scheduler, params(seed=i * 10, n=2), client=f"k{i}") for i in range(3)]
        backend.release.set()
        await asyncio.gather(first.future, *(job.future for job in jobs))
        await scheduler.stop()

    run(scenario)
    # 2 + 2 > 3: each request of two images runs alone.
    assert [sum(p.n for p in batch) for batch in backend.batches] == [1, 2, 2, 2]


def test_incompatible_requests_are_not_batched() -> None:
    backend = GatedBackend()

    async def scenario() -> None:
        scheduler = make(backend)
        first = await block_device(scheduler, backend)
        jobs = [submit(scheduler, params(seed=1, steps=2)),
                submit(scheduler, params(seed=2, steps=3)),
                submit(scheduler, params(seed=3, size=128))]
        backend.release.set()
        await asyncio.gather(first.future, *(job.future for job in jobs))
        await scheduler.stop()

    run(scenario)
    assert [len(batch) for batch in backend.batches] == [1, 1, 1, 1]


def test_without_batching_every_request_runs_alone() -> None:
    backend = GatedBackend()

    async def scenario() -> None:
        scheduler = make(backend, batching=False)
        first = await block_device(scheduler, backend)
        jobs = [submit(scheduler, params(seed=i)) for i in range(3)]
        backend.release.set()
        await asyncio.gather(first.future, *(job.future for job in jobs))
        await scheduler.stop()

    run(scenario)
    assert [len(batch) for batch in backend.batches] == [1, 1, 1, 1]


def test_keys_take_turns() -> None:
    """A key with many queued requests does not starve one that came later."""
    backend = GatedBackend()

    async def scenario() -> None:
        scheduler = make(backend, batching=False)
        first = await block_device(scheduler, backend)
        busy = [submit(scheduler, params(seed=i), client="busy") for i in range(4)]
        late = [submit(scheduler, params(seed=100 + i), client="late") for i in range(2)]
        backend.release.set()
        await asyncio.gather(first.future, *(job.future for job in busy + late))
        await scheduler.stop()

    run(scenario)
    order = [batch[0].seeds[0] for batch in backend.batches[1:]]
    assert order == [0, 100, 1, 101, 2, 3]


def test_batches_fill_round_robin_across_keys() -> None:
    backend = GatedBackend()

    async def scenario() -> None:
        scheduler = make(backend, max_batch_images=2)
        first = await block_device(scheduler, backend)
        jobs = [submit(scheduler, params(seed=i), client="busy") for i in range(3)]
        jobs.append(submit(scheduler, params(seed=100), client="late"))
        backend.release.set()
        await asyncio.gather(first.future, *(job.future for job in jobs))
        await scheduler.stop()

    run(scenario)
    assert [[p.seeds[0] for p in batch] for batch in backend.batches[1:]] == [
        [0, 100], [1, 2]]


def test_a_full_queue_answers_429_with_retry_after() -> None:
    backend = GatedBackend()

    async def scenario() -> QueueFull:
        scheduler = make(backend, max_queue=2)
        first = await block_device(scheduler, backend)
        queued = [submit(scheduler, params(seed=i)) for i in range(2)]
        with pytest.raises(QueueFull) as caught:
            submit(scheduler, params(seed=9))
        backend.release.set()
        await asyncio.gather(first.future, *(job.future for job in queued))
        # Room again once the queue drained.
        await submit(scheduler, params(seed=10)).future
        await scheduler.stop()
        return caught.value

    error = run(scenario)
    assert (error.model, error.limit) == ("m", 2)
    assert error.retry_after >= 1


def test_retry_after_follows_observed_throughput() -> None:
    backend = GatedBackend(steps=1, step_delay=0.3)
    backend.release.set()

    async def scenario() -> tuple[int, int]:
        scheduler = make(backend, batching=False, max_queue=100)
        await submit(scheduler, params(seed=0)).future  # observe: about 0.3 s per image
        backend.release.clear()
        blocker = submit(scheduler, params(seed=1))
        await until(lambda: scheduler.queue_depth == 0)
        queued = [submit(scheduler, params(seed=10 + i, n=2)) for i in range(10)]
        estimate = scheduler.retry_after()
        backend.release.set()
        await asyncio.gather(blocker.future, *(job.future for job in queued))
        await scheduler.stop()
        return estimate, 21

    estimate, images_ahead = run(scenario)
    # 21 images at about 0.3 s each.
    assert 4 <= estimate <= 10 < images_ahead


def test_abandoned_queued_request_never_runs() -> None:
    backend = GatedBackend()

    async def scenario() -> None:
        scheduler = make(backend)
        first = await block_device(scheduler, backend)
        gone = submit(scheduler, params(seed=1, steps=3))
        kept = submit(scheduler, params(seed=2))
        scheduler.abandon(gone)
        assert scheduler.queue_depth == 1
        backend.release.set()
        await asyncio.gather(first.future, kept.future)
        assert gone.future.cancelled()
        await scheduler.stop()

    run(scenario)
    assert all(p.seeds[0] != 1 for batch in backend.batches for p in batch)


def test_running_batch_stops_at_next_step_when_nobody_waits() -> None:
    backend = GatedBackend(steps=50, step_delay=0.02)
    backend.release.set()
    steps_taken: list[int] = []

    async def scenario() -> None:
        scheduler = make(backend)
        job = submit(scheduler, params(seed=1))
        await until(backend.running.is_set)
        scheduler.abandon(job)
        nxt = submit(scheduler, params(seed=2, steps=3))
        backend.steps = 1
        await nxt.future
        steps_taken.extend(backend.steps_taken)
        await scheduler.stop()

    run(scenario)
    # Judged by steps, not seconds: the abandoned batch stopped long before its 50th
    # step, and the next one then ran its single step.
    first, second = steps_taken[:-1], steps_taken[-1:]
    assert len(first) < 50 and second == [1]


def test_running_batch_goes_on_while_someone_still_waits() -> None:
    backend = GatedBackend(steps=5, step_delay=0.01)
    backend.release.set()

    async def scenario() -> list[Image.Image]:
        scheduler = make(backend)
        blocker = submit(scheduler, params(seed=1000), client="blocker")
        await until(lambda: scheduler.queue_depth == 0)
        backend.release.clear()
        backend.running.clear()
        await blocker.future
        # Two compatible requests queued behind nothing share one batch; one leaves.
        backend.release.clear()
        blocker2 = submit(scheduler, params(seed=2000), client="blocker")
        await until(backend.running.is_set)
        a = submit(scheduler, params(seed=1), client="a")
        b = submit(scheduler, params(seed=2), client="b")
        backend.release.set()
        await blocker2.future
        await until(lambda: len(backend.batches) == 3)
        scheduler.abandon(a)
        images = await b.future
        await scheduler.stop()
        return images

    assert len(run(scenario)) == 1


def test_a_failing_batch_fails_only_its_requests() -> None:
    class Flaky(FakeBackend):
        def generate(self, p: GenerationParams, on_step: StepCallback | None = None
                     ) -> list[Image.Image]:
            if p.prompt == "p666":
                raise RuntimeError("kaboom")
            return super().generate(p, on_step)

    async def scenario() -> tuple[BaseException | None, int]:
        scheduler = make(Flaky(), batching=False)
        bad = submit(scheduler, params(seed=666))
        good = submit(scheduler, params(seed=1))
        error = None
        try:
            await bad.future
        except Exception as exc:
            error = exc
        images = await good.future
        await scheduler.stop()
        return error, len(images)

    error, good_images = run(scenario)
    assert isinstance(error, GenerationFailed)
    assert "kaboom" in error.detail  # for the log; the HTTP layer shows no details
    assert good_images == 1


def test_out_of_memory_retries_with_smaller_batches() -> None:
    class SmallDevice(GatedBackend):
        def generate_batch(self, requests: Sequence[GenerationParams], max_images: int,
                           on_step: StepCallback | None = None
                           ) -> list[list[Image.Image] | EngineError]:
            if max_images > 1:
                self.max_images_seen.append(max_images)
                raise OutOfMemory("CUDA out of memory")
            return super().generate_batch(requests, max_images, on_step)

    backend = SmallDevice()
    backend.release.set()

    async def scenario() -> list[list[Image.Image]]:
        scheduler = make(backend, max_batch_images=8)
        jobs = [submit(scheduler, params(seed=i * 10, n=2), client=f"k{i}") for i in range(3)]
        results = [await job.future for job in jobs]
        await scheduler.stop()
        return results

    results = run(scenario)
    assert [len(images) for images in results] == [2, 2, 2]
    # Halved 8 → 4 → 2 → 1 until it fitted.
    assert backend.max_images_seen[:4] == [8, 4, 2, 1]


def test_out_of_memory_at_one_image_fails_the_batch() -> None:
    class NoMemory(FakeBackend):
        def generate_batch(self, requests: Sequence[GenerationParams], max_images: int,
                           on_step: StepCallback | None = None
                           ) -> list[list[Image.Image] | EngineError]:
            raise OutOfMemory("out of memory")

    async def scenario() -> BaseException:
        scheduler = make(NoMemory())
        job = submit(scheduler, params())
        with pytest.raises(OutOfMemory) as caught:
            await job.future
        await scheduler.stop()
        return caught.value

    assert "out of memory" in str(run(scenario))


def test_drain_answers_queued_with_503_and_lets_running_finish() -> None:
    backend = GatedBackend()

    async def scenario() -> None:
        pool = LocalEngine([ModelSpec(name="m", source="m")], {"m": backend},
                           max_queue=8, batching=False)
        scheduler = pool.scheduler("m")
        running = scheduler.submit(params(seed=1), "a", time.monotonic() + 60, "r1")
        await until(backend.running.is_set)
        queued = scheduler.submit(params(seed=2), "a", time.monotonic() + 60, "r2")
        pool.drain()
        with pytest.raises(Draining) as caught:
            await queued.future
        assert caught.value.retry_after >= 1
        with pytest.raises(Draining):
            scheduler.submit(params(seed=3), "a", time.monotonic() + 60, "r3")
        backend.release.set()
        assert len(await running.future) == 1
        await pool.stop()

    run(scenario)


def test_models_on_one_device_never_run_at_once() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    class Counting(FakeBackend):
        def generate(self, p: GenerationParams, on_step: StepCallback | None = None
                     ) -> list[Image.Image]:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.02)
            with lock:
                active -= 1
            return super().generate(p, on_step)

    async def scenario() -> None:
        pool = LocalEngine([ModelSpec(name="one", source="one"),
                            ModelSpec(name="two", source="two")],
                           {"one": Counting(device="gpu0"), "two": Counting(device="gpu0")},
                           max_queue=8, batching=False)
        first, second = pool.scheduler("one"), pool.scheduler("two")
        jobs = [s.submit(params(seed=i), "a", time.monotonic() + 60, str(i))
                for i in range(4) for s in (first, second)]
        await asyncio.gather(*(job.future for job in jobs))
        await pool.stop()

    run(scenario)
    assert peak == 1


def test_a_request_refused_inside_a_batch_fails_alone() -> None:
    class Refusing(GatedBackend):
        def generate_batch(self, requests: Sequence[GenerationParams], max_images: int,
                           on_step: StepCallback | None = None
                           ) -> list[list[Image.Image] | EngineError]:
            results = super().generate_batch(requests, max_images, on_step)
            return [ContentFlagged() if p.prompt == "p1" else r
                    for p, r in zip(requests, results, strict=True)]

    backend = Refusing()

    async def scenario() -> None:
        scheduler = make(backend)
        first = await block_device(scheduler, backend)
        refused = submit(scheduler, params(seed=1), client="a")
        kept = submit(scheduler, params(seed=2), client="b")
        backend.release.set()
        await first.future
        with pytest.raises(ContentFlagged):
            await refused.future
        assert len(await kept.future) == 1
        await scheduler.stop()

    run(scenario)
    assert len(backend.batches[1]) == 2


def test_long_batches_write_progress_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("diffuserve.engine.local.scheduler.PROGRESS_INTERVAL_SECONDS", 0.0)
    backend = GatedBackend(steps=3)
    backend.release.set()

    async def scenario() -> None:
        scheduler = make(backend)
        await submit(scheduler, params(seed=7)).future
        await scheduler.stop()

    with caplog.at_level("INFO", logger="diffuserve.scheduler"):
        run(scenario)
    progress = [r for r in caplog.records if r.getMessage() == "progress"]
    assert [r.fields["step"] for r in progress] == [1, 2, 3]  # type: ignore[attr-defined]
    assert progress[0].fields["request_ids"] == ["req-7"]  # type: ignore[attr-defined]


def test_a_model_with_workers_runs_that_many_batches_at_once() -> None:
    """``workers`` (on a CPU): up to that many calls of the model side by side, never
    more; a second model on the same device still waits for a free call."""
    active = {"cpu-a": 0, "cpu-b": 0}
    peak = {"cpu-a": 0, "cpu-b": 0, "all": 0}
    lock = threading.Lock()

    class Counting(FakeBackend):
        def __init__(self, name: str, workers: int) -> None:
            super().__init__(device="cpu")
            self.name = name
            self.workers = workers

        def generate(self, p: GenerationParams, on_step: StepCallback | None = None
                     ) -> list[Image.Image]:
            with lock:
                active[self.name] += 1
                peak[self.name] = max(peak[self.name], active[self.name])
                peak["all"] = max(peak["all"], sum(active.values()))
            time.sleep(0.03)
            with lock:
                active[self.name] -= 1
            return super().generate(p, on_step)

    async def scenario() -> None:
        pool = LocalEngine([ModelSpec(name="a", source="a", workers=3),
                            ModelSpec(name="b", source="b")],
                           {"a": Counting("cpu-a", 3), "b": Counting("cpu-b", 1)},
                           max_queue=16, batching=False)
        first, second = pool.scheduler("a"), pool.scheduler("b")
        jobs = [s.submit(params(seed=i), "a", time.monotonic() + 60, str(i))
                for i in range(8) for s in (first, second)]
        results = await asyncio.gather(*(job.future for job in jobs))
        assert all(len(images) == 1 for images in results)
        await pool.stop()

    run(scenario)
    assert peak["cpu-a"] == 3
    assert peak["cpu-b"] == 1
    assert peak["all"] == 3  # the device's calls: the most workers of a model on it


def test_stopping_settles_every_batch_running_side_by_side() -> None:
    backend = GatedBackend()
    backend.workers = 2

    async def scenario() -> None:
        scheduler = make(backend, batching=False)
        jobs = [submit(scheduler, params(seed=i), client=f"k{i}") for i in range(3)]
        await until(lambda: len(backend.batches) == 2)
        assert scheduler.retry_after() >= 1
        await scheduler.stop()
        for job in jobs:
            with pytest.raises(Draining):
                await job.future
        backend.release.set()

    run(scenario)
    assert len(backend.batches) == 2  # the third never started

"""``max_batch_size = "auto"``: the images per call measured at load, from the device's
free memory on CUDA and from the cost per image elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.diffusers import MAX_AUTO_BATCH, DiffusersBackend, tuning
from diffuserve.engine.local.engine import LocalEngine
from diffuserve.engine.types import GenerationParams


class Clock:
    """Stands in for the ``time`` module: seconds pass only when a probe says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def costed(backend: DiffusersBackend, clock: Clock, seconds: Any) -> list[int]:
    """Probe calls take ``seconds(images)``; returns the sizes probed."""
    probed: list[int] = []

    def probe(pipeline: object, images: int, width: int, height: int) -> None:
        probed.append(images)
        clock.now += seconds(images)

    backend._probe_call = probe  # type: ignore[method-assign]
    return probed


@pytest.mark.parametrize(("seconds", "chosen"), [
    (lambda n: 1.0 + 0.1 * n, 16),  # a fixed cost per call: bigger is always cheaper
    (lambda n: 0.3 * n, 1),  # every image costs the same: batching gains nothing
    (lambda n: 0.2 + 0.2 * n if n <= 4 else 0.2 * n * 1.5, 4),  # past 4, slower per image
])
def test_off_cuda_the_batch_after_which_images_stop_getting_cheaper(
    monkeypatch: pytest.MonkeyPatch, seconds: Any, chosen: int
) -> None:
    clock = Clock()
    monkeypatch.setattr(tuning, "time", clock)
    backend = DiffusersBackend(ModelSpec(name="m", source="/nowhere", max_batch_size="auto"))
    probed = costed(backend, clock, seconds)
    assert backend._measure_batch(object(), "cpu") == chosen
    assert probed[0] == 1 and probed[1:] == [1, 2, 4, 8, 16][:len(probed) - 1]


def test_on_cuda_as_many_as_the_free_memory_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    gib = 1 << 30
    weights, fixed, per_image, free = 4 * gib, 1 * gib, gib // 2, 20 * gib
    peak = [weights]
    backend = DiffusersBackend(ModelSpec(name="m", source="/nowhere", max_batch_size="auto"))

    def probe(pipeline: object, images: int, width: int, height: int) -> None:
        peak[0] = weights + fixed + images * per_image

    backend._probe_call = probe  # type: ignore[method-assign]
    for name, value in (("synchronize", lambda: None), ("empty_cache", lambda: None),
                        ("reset_peak_memory_stats", lambda: None),
                        ("memory_allocated", lambda: weights),
                        ("max_memory_allocated", lambda: peak[0]),
                        ("mem_get_info", lambda: (free, 80 * gib))):
        monkeypatch.setattr(torch.cuda, name, value)
    # 80 % of the free memory, less a call's fixed cost, in images of 0.5 GiB.
    assert backend._measure_batch(object(), "cuda") == int(0.8 * free - fixed) // per_image
    peak_small = [weights]

    def huge(pipeline: object, images: int, width: int, height: int) -> None:
        peak_small[0] = weights + images * 100 * gib

    backend._probe_call = huge  # type: ignore[method-assign]
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: peak_small[0])
    assert backend._measure_batch(object(), "cuda") == 1  # never fewer than one
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1000 * gib, 1000 * gib))
    backend._probe_call = probe  # type: ignore[method-assign]
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: peak[0])
    assert backend._measure_batch(object(), "cuda") == MAX_AUTO_BATCH  # never more


def test_an_auto_model_serves_with_its_measured_batch(tiny_models: dict[str, Path]) -> None:
    spec = ModelSpec(name="auto", source=str(tiny_models["sd"]), max_batch_size="auto")
    backend = DiffusersBackend(spec)
    backend.load()
    assert backend.max_batch_images in (1, 2, 4, 8, 16)
    engine = LocalEngine([spec], {"auto": backend})

    async def limit() -> int:
        return engine.scheduler("auto").max_batch_images

    import asyncio

    assert asyncio.run(limit()) == backend.max_batch_images
    images = backend.generate(GenerationParams(
        prompt="a red apple", negative_prompt=None, width=64, height=64,
        num_inference_steps=2, guidance_scale=5.0, seeds=(1, 2, 3)))
    assert len(images) == 3


def test_auto_is_a_setting_and_numbers_stay_bounded() -> None:
    assert ModelSpec(name="m", source="org/m", max_batch_size="auto").batch_images == 4
    assert ModelSpec(name="m", source="org/m", max_batch_size=8).batch_images == 8
    with pytest.raises(ValueError, match="max_batch_size"):
        ModelSpec(name="m", source="org/m", max_batch_size=65)
    with pytest.raises(ValueError, match="max_batch_size"):
        ModelSpec(name="m", source="org/m", max_batch_size="most")  # type: ignore[arg-type]

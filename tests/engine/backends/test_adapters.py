"""LoRA adapters in the engine: found by name (declared or dropped into a folder), loaded
on demand into an LRU, one set active at a time over the shared weights."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from diffuserve.config.adapters import AdapterSpec
from diffuserve.engine.adapters import AdapterLibrary, canonical
from diffuserve.engine.backends.diffusers.adapters import LoadedAdapters, takes_adapters
from diffuserve.engine.errors import UnsupportedTask


def library(folder: Path | None = None, *declared: AdapterSpec) -> AdapterLibrary:
    spec = SimpleNamespace(name="m", adapters=declared, adapters_dir=folder)
    return AdapterLibrary(spec)  # type: ignore[arg-type]  # the fields it reads


def touch(folder: Path, name: str, content: bytes = b"x") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


class RecordingPipeline:
    """diffusers' adapter methods, recorded; ``fail`` names sources that do not load."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.loaded: set[str] = set()
        self.fail = fail

    def load_lora_weights(self, where: str, weight_name: str | None = None,
                          adapter_name: str = "") -> None:
        if any(part in f"{where}/{weight_name}" for part in self.fail):
            raise ValueError("not a LoRA of this model")
        self.calls.append(("load", Path(where, weight_name or "").name, adapter_name))
        self.loaded.add(adapter_name)

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.calls.append(("set", tuple(names), tuple(adapter_weights)))

    def delete_adapters(self, names: list[str]) -> None:
        self.calls.append(("delete", tuple(names)))
        self.loaded -= set(names)

    def disable_lora(self) -> None:
        self.calls.append(("disable",))

    def enable_lora(self) -> None:
        self.calls.append(("enable",))


# -- names -----------------------------------------------------------------------------

def test_a_folders_safetensors_files_are_adapters_named_by_their_stems(tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    touch(folder, "pixel.safetensors")
    touch(folder, "notes.txt")
    touch(folder, "bad name.safetensors")
    found = library(folder, AdapterSpec(name="ink", source="owner/ink", scale=0.7))
    assert found.names() == ["ink", "pixel"]
    source = found.find("ink")
    assert source is not None and (source.source, source.scale) == ("owner/ink", 0.7)


def test_a_file_dropped_in_later_is_found_without_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    found = library(folder)
    assert found.find("clay") is None and found.names() == []
    touch(folder, "clay.safetensors")
    assert found.names() == ["clay"]
    assert found.find("clay") is not None


@pytest.mark.parametrize("name", ["../pixel", "/etc/passwd", "https://x/y.safetensors",
                                  "pixel.safetensors/..", "", ".hidden", "a" * 65])
def test_a_path_or_a_url_is_never_an_adapter(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "loras"
    touch(folder, "pixel.safetensors")
    touch(tmp_path, "pixel.safetensors")
    assert library(folder).find(name) is None
    assert library(folder).unknown(((name, 1.0),)) == name


def test_one_order_and_no_zero_scales_make_equal_sets_batch_together() -> None:
    assert canonical((("b", 1.0), ("a", 0.5))) == canonical((("a", 0.5), ("b", 1.0)))
    assert canonical((("a", 0.0),)) == ()


# -- loading ---------------------------------------------------------------------------

def test_adapters_load_on_demand_and_the_least_recently_used_is_unloaded(
        tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    for name in ("a", "b", "c"):
        touch(folder, f"{name}.safetensors")
    pipeline = RecordingPipeline()
    loaded = LoadedAdapters(pipeline, library(folder), capacity=2)
    for choice in ("a", "b", "a", "c"):
        with loaded.using(((choice, 1.0),)):
            pass
    assert loaded.loaded() == ["a", "c"]  # b was the least recently used
    assert loaded.loads == 3
    assert [call[0] for call in pipeline.calls].count("delete") == 1


def test_no_adapter_switches_them_off_and_the_next_set_on_again(tmp_path: Path) -> None:
    touch(tmp_path, "a.safetensors")
    pipeline = RecordingPipeline()
    loaded = LoadedAdapters(pipeline, library(tmp_path), capacity=2)
    with loaded.using((("a", 0.5),)):
        pass
    with loaded.using(()):
        pass
    with loaded.using((("a", 1.0),)):
        pass
    kinds = [call[0] for call in pipeline.calls]
    assert kinds == ["load", "set", "disable", "enable", "set"]
    assert pipeline.calls[-1][2] == (1.0,)


def test_a_replaced_file_is_loaded_again(tmp_path: Path) -> None:
    path = touch(tmp_path, "a.safetensors", b"one")
    pipeline = RecordingPipeline()
    loaded = LoadedAdapters(pipeline, library(tmp_path), capacity=2)
    with loaded.using((("a", 1.0),)):
        pass
    path.write_bytes(b"two, longer")
    with loaded.using((("a", 1.0),)):
        pass
    assert loaded.loads == 2 and loaded.loaded() == ["a"]


def test_more_adapters_at_once_than_the_cache_holds_is_refused(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        touch(tmp_path, f"{name}.safetensors")
    loaded = LoadedAdapters(RecordingPipeline(), library(tmp_path), capacity=2)
    with pytest.raises(UnsupportedTask) as refused, loaded.using(
            canonical((("a", 1.0), ("b", 1.0), ("c", 1.0)))):
        pass
    assert refused.value.field == "lora"


def test_an_adapter_that_does_not_load_is_refused_for_that_request_only(
        tmp_path: Path) -> None:
    touch(tmp_path, "good.safetensors")
    touch(tmp_path, "broken.safetensors")
    loaded = LoadedAdapters(RecordingPipeline(fail=("broken",)), library(tmp_path), 2)
    with pytest.raises(UnsupportedTask) as refused, loaded.using((("broken", 1.0),)):
        pass
    assert refused.value.field == "lora" and "broken" in refused.value.kind
    with loaded.using((("good", 1.0),)):  # the weights are usable after it
        pass
    assert loaded.loaded() == ["good"]


def test_calls_with_different_sets_never_overlap_and_go_in_order(tmp_path: Path) -> None:
    """Calls of the active set run together; a call of another set waits for them, and
    a call of the active set that comes after it waits too."""
    for name in ("a", "b"):
        touch(tmp_path, f"{name}.safetensors")
    loaded = LoadedAdapters(RecordingPipeline(), library(tmp_path), capacity=2)
    inside: list[tuple[Any, ...]] = []
    events: list[str] = []
    lock = threading.Lock()
    release = threading.Event()

    def call(label: str, choices: tuple[tuple[str, float], ...], hold: bool) -> None:
        with loaded.using(choices):
            with lock:
                inside.append(choices)
                assert len(set(inside)) == 1, inside  # one set in the weights at a time
                events.append(f"in {label}")
            if hold:
                release.wait(10)
            with lock:
                inside.remove(choices)
                events.append(f"out {label}")

    first = threading.Thread(target=call, args=("a1", (("a", 1.0),), True))
    first.start()
    while "in a1" not in events:
        time.sleep(0.005)
    second = threading.Thread(target=call, args=("b1", (("b", 1.0),), False))
    second.start()
    while loaded._tickets < 2:  # the b call is waiting
        time.sleep(0.005)
    third = threading.Thread(target=call, args=("a2", (("a", 1.0),), False))
    third.start()
    while loaded._tickets < 3:
        time.sleep(0.005)
    assert events == ["in a1"]  # neither b1 nor a2 got in while a1 holds the weights
    release.set()
    for thread in (first, second, third):
        thread.join(10)
    assert events == ["in a1", "out a1", "in b1", "out b1", "in a2", "out a2"]


def test_calls_with_the_same_set_run_together(tmp_path: Path) -> None:
    touch(tmp_path, "a.safetensors")
    loaded = LoadedAdapters(RecordingPipeline(), library(tmp_path), capacity=2)
    both_in = threading.Barrier(2, timeout=10)

    def call() -> None:
        with loaded.using((("a", 1.0),)):
            both_in.wait()  # fails unless the two are inside at once

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not both_in.broken and loaded.switches == 1


# -- a real pipeline -------------------------------------------------------------------

def test_on_a_tiny_pipeline_an_adapter_changes_the_drawing_and_scale_zero_does_not(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from tests.support.tiny_loras import write_tiny_loras

    write_tiny_loras(tiny_models["sd"], tmp_path / "loras", ["pixel", "ink"])
    pipeline = StableDiffusionPipeline.from_pretrained(str(tiny_models["sd"]))
    assert takes_adapters(pipeline)
    loaded = LoadedAdapters(pipeline, library(tmp_path / "loras"), capacity=2)

    def draw(choices: tuple[tuple[str, float], ...]) -> Any:
        with loaded.using(canonical(choices)):
            return pipeline("a cat", num_inference_steps=2, height=64, width=64,
                            output_type="np",
                            generator=torch.Generator().manual_seed(3)).images

    plain = draw(())
    pixel = draw((("pixel", 1.0),))
    assert np.abs(pixel - plain).mean() > 0.01
    assert np.array_equal(draw((("pixel", 0.0),)), plain)
    stacked = draw((("ink", 1.0), ("pixel", 1.0)))
    assert np.abs(stacked - pixel).mean() > 0.01
    assert np.array_equal(draw((("pixel", 1.0),)), pixel)  # back, exactly
    assert np.array_equal(draw(()), plain)

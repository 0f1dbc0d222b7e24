"""Quality of the built-in model: prompt adherence, variety, and a grid to look at.

Adherence: an image is drawn for each of 200 training captions (a fixed sample), for
50 paraphrases written here (no caption's exact words; the development set, which
choices such as the number of steps were tuned on) and for the held-out paraphrases of
``benchmarks/data/heldout_paraphrases.tsv`` (written before the captions were enriched,
never trained or tuned on), shrunk to 32×32 and ranked
against every training image (composited on white, 32×32, by L2 distance). It adheres
when one of the 5 nearest shows the prompt's concept (skin tones folded); the top-1 rate
counts the nearest alone. Chance rates (5 or 1 random training images) are printed
alongside. Variety: the mean pairwise distance of 4 seeds of a prompt against that of
random pairs of training images, for a subject the data shows once ("a red apple"), for
subjects whose skin tone the prompt leaves open and for prompts that leave the subject
open ("a tree"). The grid shows 16 prompts at 256×256.

The pipeline frames each seed's subject its own way (scale, turn, place), which the
ranking above cannot tell from another image; so adherence and variety are also
reported framing-free: each image as the square around what it draws, against the
training images seen the same way (:func:`unframed`).

``--study`` runs measurements of the serving knobs instead: ``knobs`` (steps and
guidance: adherence and fidelity to the artwork), ``edits`` (masked edits: whether the
redrawn area follows the prompt, and the seam), ``variety`` (with ``--framings`` and
``--margins``, the pipeline's variety settings tried in turn) and ``sheet`` (the
``docs/builtin-knobs-*.png`` sheet of what the knobs draw).

    python benchmarks/builtin_quality.py [--pipeline DIR] [--data DIR] [--json out.json]
    python benchmarks/builtin_quality.py --limit 16 --paraphrases 8 --grid /tmp/grid.png
    python benchmarks/builtin_quality.py --study knobs --study edits --study sheet

``--data`` is a ``python -m train_builtin prepare-data`` output folder; the 32 px
training images are cached there as ``images_32_eval.npy``. Needs the trainer installed
(``pip install -e tools/train_builtin``): its manifest reader and renderer are reused.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from train_builtin.data import Entry, load_manifest  # noqa: E402
from train_builtin.prepare import render, render_rgba  # noqa: E402
from train_builtin.vocabulary import read_prompt_pairs  # noqa: E402

from diffuserve import builtin  # noqa: E402

DEFAULT_DATA = Path(platformdirs.user_cache_dir("diffuserve")) / "training" / "data"
HELDOUT = Path(__file__).resolve().parent / "data" / "heldout_paraphrases.tsv"
EVAL_SIDE = 32
EVAL_CACHE = "images_32_eval.npy"
UNFRAMED_CACHE = "images_32_unframed.npy"
TOP_K = 5

#: (prompt, the concept it asks for): everyday subjects, none a caption of the data.
PARAPHRASES: tuple[tuple[str, str], ...] = (
    ("a kitty", "a cat"),
    ("a car", "an automobile"),
    ("a slice of pizza", "a pizza"),
    ("a puppy", "a dog"),
    ("a big grey elephant", "an elephant"),
    ("a spaceship taking off", "a rocket"),
    ("an acoustic guitar", "a guitar"),
    ("a cheeseburger", "a hamburger"),
    ("a cup of coffee", "hot beverage"),
    ("a man made of snow", "a snowman"),
    ("a spooky spirit", "a ghost"),
    ("a king's golden crown", "a crown"),
    ("a tortoise", "a turtle"),
    ("a red love heart", "a red heart"),
    ("a juicy strawberry", "a strawberry"),
    ("a striped big cat", "a tiger"),
    ("a bunny", "a rabbit"),
    ("a piggy", "a pig"),
    ("a panda bear", "a panda"),
    ("a grizzly bear", "a bear"),
    ("an octopus with tentacles", "an octopus"),
    ("a scoop of ice cream", "ice cream"),
    ("a glazed donut", "a doughnut"),
    ("a mexican taco", "a taco"),
    ("a bike", "a bicycle"),
    ("a city bus", "a bus"),
    ("a jet plane", "an airplane"),
    ("a chopper", "a helicopter"),
    ("a fire truck", "a fire engine"),
    ("a sailing boat", "a sailboat"),
    ("a motorbike", "a motorcycle"),
    ("a smartphone", "a mobile phone"),
    ("a laptop computer", "a laptop"),
    ("a wristwatch", "a watch"),
    ("an electric bulb", "a light bulb"),
    ("a football for soccer", "a soccer ball"),
    ("a pine tree", "an evergreen tree"),
    ("a red rose flower", "a rose"),
    ("a toadstool", "a mushroom"),
    ("an erupting volcano", "a volcano"),
    ("a lightning bolt", "a high voltage"),
    ("a gift box with a bow", "a wrapped gift"),
    ("a golden trophy cup", "a trophy"),
    ("a human skull", "a skull"),
    ("a halloween pumpkin", "a jack-o-lantern"),
    ("a tyrannosaurus", "T-Rex"),
    ("a ladybug", "a lady beetle"),
    ("a bee", "a honeybee"),
    ("an aubergine", "an eggplant"),
    ("a face with heart eyes", "smiling face with heart-eyes"),
)

GRID_PROMPTS = (
    "a red apple", "a rocket", "a smiling cat", "a pizza",
    "a dog", "a car", "a house", "a banana",
    "a woman swimming, medium skin tone", "a sun", "a snowman", "a guitar",
    "a heart", "a turtle", "a crown", "a ghost",
)
#: Variety prompts: one subject with a single training image, and subjects whose skin
#: tone the prompt leaves open (the data shows each in six).
VARIETY_PROMPTS = ("a red apple", "a waving hand", "a person", "a thumbs up")
#: Prompts that leave the kind or the colour open: the data shows several subjects that fit.
ROOMY_PROMPTS = ("a tree", "a fruit", "a flower", "a heart")
VARIETY_SEEDS = (0, 1, 2, 3)


def load_heldout(path: Path = HELDOUT) -> tuple[tuple[str, str], ...]:
    """The held-out (prompt, concept) pairs."""
    return tuple(read_prompt_pairs(path))


def check_paraphrases(entries: Sequence[Entry],
                      pairs: Sequence[tuple[str, str]] = PARAPHRASES) -> None:
    """No paraphrase is a caption (or concept) of the data; every target is a concept."""
    texts = {e.caption.casefold() for e in entries} | {e.concept.casefold() for e in entries}
    concepts = {e.concept for e in entries}
    prompts = [prompt for prompt, _ in pairs]
    assert len(set(prompts)) == len(prompts), "a paraphrase is listed twice"
    copied = [prompt for prompt in prompts if prompt.casefold() in texts]
    assert not copied, f"paraphrases that are captions of the data: {copied}"
    missing = [target for _, target in pairs if target not in concepts]
    assert not missing, f"paraphrase targets that are no concept of the data: {missing}"


def on_white(image: Image.Image) -> Image.Image:
    """``image`` as RGB, composited on white where it has alpha."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    return image.convert("RGB")


def shrink(image: Image.Image) -> np.ndarray:
    """An image as the ranking sees it: RGB on white, 32×32 (Lanczos)."""
    rgb = on_white(image).resize((EVAL_SIDE, EVAL_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


#: Framing-free ranking: the drawing is found at this side (a colour this far from white,
#: in a 3×3 block, so that lone specks do not count), and its square is ranked.
FRAME_SIDE, FRAME_DISTANCE = 128, 24.0


def unframed(image: Image.Image) -> np.ndarray:
    """An image as the framing-free ranking sees it: the square around what is drawn
    (centred on it, on white), at 32×32. Where and how large the subject is placed no
    longer counts; how it is turned still does."""
    rgb = on_white(image).resize((FRAME_SIDE, FRAME_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(rgb, np.float32)
    drawn = Image.fromarray(((np.linalg.norm(pixels - 255.0, axis=-1) > FRAME_DISTANCE)
                             * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(3))
    rows, cols = np.nonzero(np.asarray(drawn))
    if len(rows):
        side = max(rows.max() - rows.min(), cols.max() - cols.min()) + 3
        top = (rows.max() + rows.min() + 1 - side) // 2
        left = (cols.max() + cols.min() + 1 - side) // 2
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(rgb, (-left, -top))
        rgb = square
    small = rgb.resize((EVAL_SIDE, EVAL_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def unframed_images(data: Path, entries: Sequence[Entry]) -> np.ndarray:
    """Every training image as :func:`unframed` sees it, cached in the data folder."""
    cache = data / UNFRAMED_CACHE
    if cache.is_file():
        cached = np.asarray(np.load(cache), np.uint8)
        if cached.shape == (len(entries), EVAL_SIDE, EVAL_SIDE, 3):
            return cached
    pixels = np.stack([unframed(Image.fromarray(render(data / "assets" / e.file, FRAME_SIDE)))
                       for e in entries])
    try:
        np.save(cache, pixels)
    except OSError as exc:
        print(f"(could not cache {cache}: {exc})", file=sys.stderr)
    return pixels


def eval_images(data: Path, entries: Sequence[Entry]) -> np.ndarray:
    """Every training image at 32×32, cached in the data folder."""
    cache = data / EVAL_CACHE
    if cache.is_file():
        cached = np.load(cache)
        if cached.shape == (len(entries), EVAL_SIDE, EVAL_SIDE, 3):
            return cached
    started = time.perf_counter()
    pixels = np.stack([render(data / "assets" / e.file, EVAL_SIDE) for e in entries])
    try:
        np.save(cache, pixels)
    except OSError as exc:
        print(f"(could not cache {cache}: {exc})", file=sys.stderr)
    print(f"rendered {len(entries)} training images at {EVAL_SIDE}px "
          f"in {time.perf_counter() - started:.1f} s → {cache}")
    return pixels


def flat(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0


class Ranker:
    """Nearest training images by L2 distance at 32×32; with ``unframed`` pixels (the
    training images as :func:`unframed` sees them), also framing-free."""

    def __init__(self, pixels: np.ndarray, entries: Sequence[Entry],
                 unframed: np.ndarray | None = None) -> None:
        self.data = flat(pixels)
        self.norms = (self.data ** 2).sum(axis=1)
        self.concepts = [e.concept for e in entries]
        self.count = Counter(self.concepts)
        self.unframed = None if unframed is None else Ranker(unframed, entries)

    def nearest(self, queries: np.ndarray, k: int = TOP_K) -> np.ndarray:
        q = flat(queries)
        dist = (q ** 2).sum(axis=1)[:, None] - 2 * q @ self.data.T + self.norms[None, :]
        top = np.argpartition(dist, k, axis=1)[:, :k]
        order = np.take_along_axis(dist, top, axis=1).argsort(axis=1)
        return np.take_along_axis(top, order, axis=1)

    def chance(self, concept: str, k: int) -> float:
        """The chance that ``k`` random training images include ``concept``."""
        n, hits = len(self.concepts), self.count[concept]
        return 1.0 - math.comb(n - hits, k) / math.comb(n, k)


class Generator:
    """The built-in pipeline through DiffusersBackend, many prompts per call."""

    def __init__(self, args: argparse.Namespace) -> None:
        from diffuserve.engine.backends.diffusers import DiffusersBackend

        spec = builtin.builtin_spec().model_copy(
            update={"source": str(args.pipeline), "device": args.device,
                    **({"runtime": args.runtime} if args.runtime else {})})
        self.steps = args.steps or spec.steps
        self.guidance = spec.guidance_scale if args.guidance is None else args.guidance
        self.batch = args.batch
        self.backend = DiffusersBackend(spec)
        started = time.perf_counter()
        self.backend.load()
        self.load_s = time.perf_counter() - started
        self.images = 0
        self.seconds = 0.0

    def __call__(self, jobs: Sequence[tuple[str, Sequence[int]]],
                 size: int = 256, background: str = "opaque", steps: int | None = None,
                 guidance: float | None = None) -> list[list[Image.Image]]:
        """Images for (prompt, seeds) pairs, in order (``steps`` and ``guidance``: the
        generator's own unless given)."""
        from diffuserve.engine.types import GenerationParams

        params = [GenerationParams(prompt=prompt, negative_prompt=None, width=size,
                                   height=size, num_inference_steps=steps or self.steps,
                                   guidance_scale=self.guidance if guidance is None
                                   else guidance, seeds=tuple(seeds),
                                   background=background)
                  for prompt, seeds in jobs]
        return self.draw(params)

    def draw(self, params: Sequence[Any]) -> list[list[Image.Image]]:
        """The images of each ``GenerationParams``, in order, batched as the server
        batches them (requests of one shape together)."""
        out: list[list[Image.Image]] = []
        started = time.perf_counter()
        chunk: list[Any] = []
        for item in [*params, None]:
            if chunk and item is not None and _shape(item) != _shape(chunk[0]):
                for result in self.backend.generate_batch(chunk, self.batch):
                    if isinstance(result, Exception):
                        raise result
                    out.append(result)
                chunk = []
            if item is not None:
                chunk.append(item)
            full = sum(p.n for p in chunk) >= self.batch
            if chunk and (full or item is None):
                for result in self.backend.generate_batch(chunk, self.batch):
                    if isinstance(result, Exception):
                        raise result
                    out.append(result)
                chunk = []
        self.seconds += time.perf_counter() - started
        self.images += sum(p.n for p in params)
        return out


def _shape(params: Any) -> tuple[Any, ...]:
    """What one pipeline call must share (the server's batch key, in effect)."""
    return (params.width, params.height, params.num_inference_steps, params.guidance_scale,
            params.background, id(params.image), id(params.mask), params.strength)


def adherence(generate: Generator, ranker: Ranker,
              prompts: Sequence[tuple[str, str]], steps: int | None = None,
              guidance: float | None = None) -> dict[str, Any]:
    """Top-5/top-1 rates for (prompt, target concept) pairs; prompt ``i`` uses seed ``i``."""
    started = time.perf_counter()
    images = generate([(prompt, (i,)) for i, (prompt, _) in enumerate(prompts)],
                      steps=steps, guidance=guidance)
    return {**ranked(ranker, prompts, [found[0] for found in images]),
            "seconds": time.perf_counter() - started}


def _framing_free(result: dict[str, Any]) -> str:
    """The framing-free rates of an adherence result, as a printed suffix."""
    free = result.get("unframed")
    return (f"  framing-free {free['top5']:6.1%} / {free['top1']:6.1%}" if free else "")


def ranked(ranker: Ranker, prompts: Sequence[tuple[str, str]],
           images: Sequence[Image.Image]) -> dict[str, Any]:
    """Top-5/top-1 rates of ``images`` drawn for (prompt, target concept) pairs."""
    nearest = ranker.nearest(np.stack([shrink(image) for image in images]))
    framing_free: dict[str, float] = {}
    if ranker.unframed is not None:
        found = ranker.unframed.nearest(np.stack([unframed(image) for image in images]))
        free = [[ranker.concepts[j] for j in row] for row in found]
        framing_free = {
            "top5": statistics.fmean(t in n for (_, t), n in zip(prompts, free, strict=True)),
            "top1": statistics.fmean(t == n[0] for (_, t), n in zip(prompts, free,
                                                                    strict=True))}
    rows = []
    for (prompt, target), found in zip(prompts, nearest, strict=True):
        names = [ranker.concepts[j] for j in found]
        rows.append({"prompt": prompt, "concept": target, "nearest": names,
                     "top5": target in names, "top1": names[0] == target})
    count = len(rows)
    return {
        "count": count,
        "top5": sum(r["top5"] for r in rows) / count,
        "top1": sum(r["top1"] for r in rows) / count,
        "chance_top5": statistics.fmean(ranker.chance(t, TOP_K) for _, t in prompts),
        "chance_top1": statistics.fmean(ranker.chance(t, 1) for _, t in prompts),
        "unframed": framing_free,
        "rows": rows,
    }


#: How the ceiling's training images are altered: as the model draws them, and as
#: geometric augmentation would (which the ranking cannot tell from other images).
CEILING_VIEWS = {
    "as drawn": lambda image: image,
    "turned 10°": lambda image: image.rotate(10, Image.Resampling.BICUBIC,
                                             fillcolor=(255, 255, 255)),
    "mirrored": lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "scaled to 90 %": lambda image: _scaled(image, 0.9),
    "scaled to 80 %": lambda image: _scaled(image, 0.8),
}


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    side = round(image.width * factor)
    canvas = Image.new("RGB", image.size, "white")
    canvas.paste(image.resize((side, side), Image.Resampling.LANCZOS),
                 ((image.width - side) // 2, (image.height - side) // 2))
    return canvas


def ceiling(data: Path, ranker: Ranker, entries: Sequence[Entry],
            sample: Sequence[Entry]) -> dict[str, Any] | None:
    """The same ranking for the sampled training images themselves, as the model's 64 px
    output would show them (``images_64.npy`` upscaled to 256): the best a model can do;
    and for the same images mirrored or scaled down on white."""
    path = data / "images_64.npy"
    if not path.is_file():
        return None
    pixels = np.load(path, mmap_mode="r")
    if len(pixels) != len(entries):
        return None
    where = {e.file: i for i, e in enumerate(entries)}
    drawn = [Image.fromarray(np.asarray(pixels[where[e.file]])).resize(
        (256, 256), Image.Resampling.LANCZOS) for e in sample]
    views = {}
    for view, alter in CEILING_VIEWS.items():
        altered = [alter(image) for image in drawn]
        views[view] = ranked(ranker, [(e.caption, e.concept) for e in sample], altered)
    return {"count": len(sample), **views["as drawn"], "views": views}


def _iou(found: np.ndarray, want: np.ndarray) -> float:
    """Intersection over union of the covered pixels (alpha ≥ 128) of two alpha maps."""
    a, b = found >= 128, want >= 128
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def decode_own_latents(pipe: Any, data: Path, entries: Sequence[Entry],
                       chosen: Sequence[Entry], size: int,
                       background: str = "opaque") -> list[Image.Image]:
    """The decoders alone: each chosen training image's latents (its 64 px picture on
    white, encoded by the pipeline) decoded as the pipeline presents a finished image at
    ``size``²."""
    import torch

    where = {e.file: i for i, e in enumerate(entries)}
    opaque = np.load(data / "images_64.npy", mmap_mode="r")
    pictures = [Image.fromarray(np.asarray(opaque[where[e.file]])) for e in chosen]
    with torch.no_grad():
        latents = pipe.encode_images(pictures)
        return [pipe.decode_preview(latents[i:i + 1], size, size, background)
                for i in range(len(latents))]


#: The sizes alpha agreement is measured at: the autoencoder's and the artwork's own.
ALPHA_SIZES = (64, 256)


def _alpha_at(images: Sequence[Image.Image], side: int) -> np.ndarray:
    """The alpha of RGBA ``images`` resized to ``side`` as the artwork is (Lanczos on
    premultiplied colour)."""
    return np.stack([np.asarray(image.convert("RGBa").resize(
        (side, side), Image.Resampling.LANCZOS).convert("RGBA"))[..., 3] for image in images])


def alpha_agreement(generate: Generator, data: Path, entries: Sequence[Entry],
                    sample: Sequence[Entry], count: int) -> dict[str, Any]:
    """How well the transparent cut-out matches the artwork's own alpha, at 64 px (the
    autoencoder's size) and at 256 px (the artwork's): the decoders alone (the training
    images' latents decoded with ``background="transparent"``) and the model end to end
    (captions drawn transparent at 256², seed i, against the captioned image framed as
    seed i frames the drawing). Mean IoU of covered pixels and mean absolute alpha error
    (0–255)."""

    pipe = generate.backend.pipeline
    chosen = list(sample[:count])
    side = max(ALPHA_SIZES)
    decoded = decode_own_latents(pipe, data, entries, chosen, side, "transparent")
    drawn = [found[0] for found in generate(
        [(e.caption, (i,)) for i, e in enumerate(chosen)], size=side,
        background="transparent")]
    results: dict[str, Any] = {"count": len(chosen),
                               "detail_decoder": getattr(pipe, "detail", None) is not None}
    for size in ALPHA_SIZES:
        # The decoders alone draw the artwork where it is; the model frames it as the
        # caption's seed says, and its artwork is framed alike.
        plain = [render_rgba(data / "assets" / e.file, size)[..., 3] for e in chosen]
        framed = _alpha_at([as_framed(Image.fromarray(render_rgba(data / "assets" / e.file,
                                                                  side)), i, side)
                            for i, e in enumerate(chosen)], size)
        results[str(size)] = {}
        for key, images, want in (("decoder", decoded, np.stack(plain)),
                                  ("model", drawn, framed)):
            found = _alpha_at(images, size)
            results[str(size)][key] = {
                "iou": statistics.fmean(_iou(f, w) for f, w in zip(found, want, strict=True)),
                "mae": float(np.abs(found.astype(int) - want.astype(int)).mean())}
    return results


def as_framed(artwork: Image.Image, seed: int, side: int) -> Image.Image:
    """``artwork`` (a square subject) placed on a ``side`` px square as the pipeline
    places the drawing of ``seed``: framed, where the pipeline frames its subjects."""
    from diffuserve.builtin import pipeline as emoji

    framing_for = getattr(emoji, "framing_for", None)
    framing = framing_for(seed) if framing_for is not None else None
    placed: Image.Image = emoji.place_on_canvas(artwork, side, side, *(
        (framing,) if framing is not None else ()))
    return placed


def mean_pairwise(vectors: np.ndarray) -> float:
    return statistics.fmean(float(np.linalg.norm(a - b))
                            for a, b in itertools.combinations(vectors, 2))


def variety(generate: Generator, pixels: np.ndarray, pairs: int,
            asked: Sequence[str] = (*VARIETY_PROMPTS, *ROOMY_PROMPTS),
            ranker: Ranker | None = None) -> dict[str, Any]:
    """Mean pairwise distance of 4 seeds per prompt, against random training pairs; with
    a ``ranker`` that ranks framing-free, the same again framing-free (each image as
    :func:`unframed` sees it, against the training images seen so): what differs in the
    drawing itself rather than in where it is placed."""
    rng = random.Random(1)
    views = [("", flat(pixels), shrink)]
    if ranker is not None and ranker.unframed is not None:
        views.append(("unframed_", ranker.unframed.data, unframed))
    pairs_drawn = [rng.sample(range(len(pixels)), 2) for _ in range(pairs)]
    found = generate([(prompt, VARIETY_SEEDS) for prompt in asked])
    result: dict[str, Any] = {"seeds": list(VARIETY_SEEDS), "data_pairs": pairs,
                              "prompts": {prompt: {} for prompt in asked}}
    for prefix, data, view in views:
        spread = statistics.fmean(float(np.linalg.norm(data[a] - data[b]))
                                  for a, b in pairs_drawn)
        result[prefix + "data_distance"] = spread
        for prompt, images in zip(asked, found, strict=True):
            seeds = mean_pairwise(flat(np.stack([view(image) for image in images])))
            result["prompts"][prompt].update({prefix + "seed_distance": seeds,
                                              prefix + "ratio": seeds / spread})
    return result


def sheet(images: Sequence[Image.Image], labels: Sequence[str], path: Path,
          side: int = 256, cols: int = 4) -> None:
    """Tiles of ``side`` px, ``cols`` a row, each label written under its tile."""
    try:
        font: Any = ImageFont.load_default(size=14)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: bitmap font
        font = ImageFont.load_default()
    label = 24
    rows = math.ceil(len(images) / cols)
    canvas = Image.new("RGB", (cols * side, rows * (side + label)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (text, image) in enumerate(zip(labels, images, strict=True)):
        x, y = (index % cols) * side, (index // cols) * (side + label)
        canvas.paste(image.convert("RGB").resize((side, side)), (x, y))
        while draw.textlength(text, font=font) > side - 6 and len(text) > 4:
            text = text[:-2] + "…"
        width = draw.textlength(text, font=font)
        draw.text((x + (side - width) / 2, y + side + 4), text, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def grid(generate: Generator, path: Path, side: int = 256) -> None:
    """4×4 tiles of GRID_PROMPTS (seed 0), each prompt written under its tile."""
    images = [found[0] for found in generate([(p, (0,)) for p in GRID_PROMPTS], side)]
    sheet(images, GRID_PROMPTS, path, side)


TRANSPARENT_PROMPTS = ("a red apple", "a rocket", "a kitty", "a waving hand")


def transparent_sheet(generate: Generator, path: Path, side: int = 256) -> None:
    """TRANSPARENT_PROMPTS drawn with ``background="transparent"`` (seed 0) in a row over
    a checkerboard, so that the alpha channel shows."""
    found = generate([(prompt, (0,)) for prompt in TRANSPARENT_PROMPTS], side,
                     background="transparent")
    cells = 16
    board = np.indices((side // cells, len(found) * side // cells)).sum(axis=0) % 2
    pixels = np.where(board[..., None] == 0, 255, 204).astype(np.uint8)
    canvas = Image.fromarray(np.repeat(np.repeat(pixels, cells, 0), cells, 1).repeat(3, 2))
    canvas = canvas.convert("RGBA")
    for index, images in enumerate(found):
        canvas.alpha_composite(images[0].convert("RGBA"), (index * side, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.convert("RGB").save(path)


def variety_sheet(generate: Generator, path: Path, side: int = 192) -> None:
    """A row of VARIETY_SEEDS per variety prompt."""
    found = generate([(prompt, VARIETY_SEEDS) for prompt in VARIETY_PROMPTS], side)
    images = [image for row in found for image in row]
    labels = [f"{prompt}, seed {seed}" for prompt in VARIETY_PROMPTS for seed in VARIETY_SEEDS]
    sheet(images, labels, path, side, cols=len(VARIETY_SEEDS))


#: A pixel this far (px at 256) from everything the artwork covers is clear background;
#: drawn further than STRAY_DISTANCE from white there, it is a stray speck.
BACKGROUND_MARGIN = 8
STRAY_DISTANCE = 40.0


def fidelity(images: Sequence[Image.Image], data: Path,
             chosen: Sequence[Entry]) -> dict[str, float]:
    """How close drawings of training captions (caption ``i`` drawn with seed ``i``) are
    to the captioned artwork (256 px, on white, framed as the seed frames the drawing):
    RMS error per image (0-255, median and mean), and the share of the artwork's
    clear background drawn as stray specks (mean per image; and the share of images with
    more than 1 % of it speckled). Speckled, unfinished or noisy drawings score worse in
    both; adherence at 32 px barely sees them."""
    errors, strays = [], []
    for seed, (image, entry) in enumerate(zip(images, chosen, strict=True)):
        art = np.asarray(as_framed(Image.fromarray(render(data / "assets" / entry.file, 256)),
                                   seed, 256), np.float32)
        alpha = np.asarray(as_framed(Image.fromarray(render_rgba(
            data / "assets" / entry.file, 256)), seed, 256))[..., 3]
        drawn = np.asarray(image.convert("RGB").resize((256, 256), Image.Resampling.LANCZOS),
                           np.float32)
        errors.append(float(np.sqrt(((drawn - art) ** 2).mean())))
        near = Image.fromarray(alpha).filter(ImageFilter.MaxFilter(2 * BACKGROUND_MARGIN + 1))
        clear = np.asarray(near) == 0
        specks = np.linalg.norm(drawn - 255.0, axis=-1) > STRAY_DISTANCE
        strays.append(float(specks[clear].mean()) if clear.any() else 0.0)
    return {"rms": statistics.median(errors), "rms_mean": statistics.fmean(errors),
            "stray": statistics.fmean(strays),
            "speckled": statistics.fmean(share > 0.01 for share in strays)}


def parse_knobs(text: str) -> list[tuple[int, float]]:
    """``"8:4,16:3"`` → [(8, 4.0), (16, 3.0)]: (steps, guidance) pairs."""
    pairs = []
    for item in text.split(","):
        steps, _, guidance = item.partition(":")
        pairs.append((int(steps), float(guidance)))
    return pairs


def knob_study(generate: Generator, ranker: Ranker, data: Path, sample: Sequence[Entry],
               paraphrases: Sequence[tuple[str, str]],
               settings: Sequence[tuple[int, float]]) -> list[dict[str, Any]]:
    """For each (steps, guidance): the sampled captions drawn (seed i) and ranked, their
    fidelity to the artwork, and the paraphrases' adherence."""
    rows: list[dict[str, Any]] = []
    for steps, guidance in settings:
        started = time.perf_counter()
        drawn = [found[0] for found in generate(
            [(e.caption, (i,)) for i, e in enumerate(sample)], steps=steps, guidance=guidance)]
        captions = ranked(ranker, [(e.caption, e.concept) for e in sample], drawn)
        para = adherence(generate, ranker, paraphrases, steps, guidance)
        rows.append({"steps": steps, "guidance": guidance,
                     "captions": {k: captions[k] for k in ("count", "top5", "top1",
                                                           "unframed")},
                     "paraphrases": {k: para[k] for k in ("count", "top5", "top1",
                                                          "unframed")},
                     **fidelity(drawn, data, sample),
                     "seconds": time.perf_counter() - started})
        row = rows[-1]
        print(f"knobs  {steps:>3} steps, guidance {guidance:<4}  captions "
              f"{row['captions']['top5']:6.1%} / {row['captions']['top1']:6.1%}  paraphrases "
              f"{row['paraphrases']['top5']:6.1%} / {row['paraphrases']['top1']:6.1%}  "
              f"RMS {row['rms']:5.1f} (mean {row['rms_mean']:5.1f})  stray "
              f"{row['stray']:6.2%}  speckled {row['speckled']:5.1%}"
              f"{_framing_free(captions)}", flush=True)
    return rows


#: (the picture's caption, the edit's prompt, the half the mask clears): both training
#: captions, so the edit subject's artwork shows what the redrawn half should look like.
EDIT_CASES = (("a red apple", "a green apple", "top"),
              ("a red heart", "a blue heart", "top"),
              ("a red circle", "a green circle", "left"),
              ("a cat face", "a tiger face", "top"),
              ("a yellow heart", "a purple heart", "left"),
              ("a red square", "a blue square", "top"))
EDIT_SEEDS = (2, 3)
#: Pixels either side of the mask's edge in which the seam is looked for.
SEAM_BAND = 12


def half_mask(side: int, half: str) -> Image.Image:
    """An ``L`` mask (white = redraw, as the engine takes it) of the top or left half."""
    mask = Image.new("L", (side, side), 0)
    mask.paste(255, (0, 0, side, side // 2) if half == "top" else (0, 0, side // 2, side))
    return mask


def edit(generate: Generator, picture: Image.Image, mask: Image.Image, prompt: str,
         seeds: Sequence[int], kept: bool = True) -> list[Image.Image]:
    """A masked edit as the server makes it: the engine's drawing (an edit at low input
    fidelity: strength 1), then (``kept``) the service's step that puts the unmasked
    pixels back."""
    from diffuserve.engine.types import GenerationParams
    from diffuserve.service.editing import keep_unmasked
    from diffuserve.service.planning import EDIT_STRENGTH

    params = GenerationParams(prompt=prompt, negative_prompt=None, width=picture.width,
                              height=picture.height, num_inference_steps=generate.steps,
                              guidance_scale=generate.guidance, seeds=tuple(seeds),
                              image=picture, mask=mask, strength=EDIT_STRENGTH[("low", True)])
    drawn = generate.draw([params])[0]
    return keep_unmasked(drawn, picture, mask) if kept else drawn


def _seam(image: np.ndarray, half: str) -> float:
    """The largest colour step (0-441) between neighbouring pixels across the mask's
    edge, within SEAM_BAND of it: the median over the lines that cross the subject."""
    pixels = image if half == "top" else image.transpose(1, 0, 2)
    edge = pixels.shape[0] // 2
    band = pixels[edge - SEAM_BAND:edge + SEAM_BAND].astype(np.float32)
    steps = np.linalg.norm(np.diff(band, axis=0), axis=-1).max(axis=0)
    crossing = (np.linalg.norm(band - 255.0, axis=-1) > STRAY_DISTANCE).any(axis=0)
    return float(np.median(steps[crossing])) if crossing.any() else 0.0


def edit_study(generate: Generator, data: Path, entries: Sequence[Entry],
               feathers: Sequence[float] = (), side: int = 256) -> dict[str, Any]:
    """Each EDIT_CASES edit of the model's own picture (seed 1), EDIT_SEEDS seeds: whether
    the redrawn half is nearer the edit subject's artwork than the picture's (RMS at 64
    px over that half: the ratio, below 1 when it follows the prompt) and how hard the
    seam is (:func:`_seam`; the picture itself across the same line, for scale). With
    ``feathers``, the seam again for each share of the side the service's feather could
    take (the drawings are the same: only the service's last step is redone)."""
    from diffuserve.service import editing

    files = {e.caption: e.file for e in entries}
    rows: list[dict[str, Any]] = []
    drawn: list[tuple[Image.Image, Image.Image, list[Image.Image], str]] = []
    for source, prompt, half in EDIT_CASES:
        picture = generate([(source, (1,))], side)[0][0].convert("RGB")
        mask = half_mask(side, half)
        region = np.asarray(half_mask(64, half)) > 0
        images = edit(generate, picture, mask, prompt, EDIT_SEEDS, kept=False)
        drawn.append((picture, mask, images, half))

        def error(image: Image.Image, caption: str, region: np.ndarray = region) -> float:
            found = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.LANCZOS),
                               np.float32)
            want = render(data / "assets" / files[caption], 64).astype(np.float32)
            return float(np.sqrt(((found - want)[region] ** 2).mean()))

        for seed, image in zip(EDIT_SEEDS, editing.keep_unmasked(images, picture, mask),
                               strict=True):
            ratio = error(image, prompt) / max(error(image, source), 1e-6)
            rows.append({"picture": source, "prompt": prompt, "half": half, "seed": seed,
                         "ratio": ratio, "follows": ratio < 1.0,
                         "seam": _seam(np.asarray(image.convert("RGB")), half),
                         "picture_seam": _seam(np.asarray(picture), half)})
            print(f"edit   {source!r} → {prompt!r} ({half}, seed {seed}): ratio "
                  f"{ratio:.2f}, seam {rows[-1]['seam']:.0f} (the picture's "
                  f"{rows[-1]['picture_seam']:.0f})", flush=True)
    seams = {}
    saved: tuple[Any, Any] = (getattr(editing, "FEATHER_SHARE", None),
                              getattr(editing, "FEATHER_MIN_PX", None))
    try:
        for share in feathers:
            setattr(editing, "FEATHER_SHARE", share)  # noqa: B010 (absent before the feather)
            setattr(editing, "FEATHER_MIN_PX", 0)  # noqa: B010
            seams[share] = statistics.median(
                _seam(np.asarray(image.convert("RGB")), half)
                for picture, mask, images, half in drawn
                for image in editing.keep_unmasked(images, picture, mask))
            print(f"feather {share:.4f} of the side ({round(side * share)} px at {side}): "
                  f"seam {seams[share]:.0f}", flush=True)
    finally:
        if saved[0] is not None:
            setattr(editing, "FEATHER_SHARE", saved[0])  # noqa: B010
            setattr(editing, "FEATHER_MIN_PX", saved[1])  # noqa: B010
    return {"rows": rows, "follows": statistics.fmean(r["follows"] for r in rows),
            "ratio": statistics.median(r["ratio"] for r in rows),
            "seam": statistics.median(r["seam"] for r in rows),
            "picture_seam": statistics.median(r["picture_seam"] for r in rows),
            "seam_by_feather": seams}


def variety_study(generate: Generator, ranker: Ranker, pixels: np.ndarray,
                  sample: Sequence[Entry], paraphrases: Sequence[tuple[str, str]],
                  framings: Sequence[tuple[float, float, float]], margins: Sequence[float],
                  pairs: int) -> dict[str, Any]:
    """What the pipeline's variety settings buy and cost, each tried in turn (the
    module's constants set for the measurement, then restored): for each framing (the
    smallest scale, the largest turn, the share of the room it may move across:
    ``FRAMING_MIN_SCALE``, ``FRAMING_TURN``, ``FRAMING_MOVE``), the variety of
    VARIETY_PROMPTS and the sampled captions' adherence (each framed as its seed says);
    for each margin of the prompt index's alternatives (``VARIETY_MARGIN``), unframed, the
    variety of ROOMY_PROMPTS and the development paraphrases' adherence."""
    from diffuserve.builtin import pipeline as emoji

    pipe = generate.backend.pipeline
    saved = (emoji.FRAMING_MIN_SCALE, emoji.FRAMING_TURN, emoji.FRAMING_MOVE,
             emoji.VARIETY_MARGIN)
    result: dict[str, Any] = {"framings": [], "margins": []}
    captions = [(e.caption, e.concept) for e in sample]
    try:
        for scale, turn, move in framings:
            emoji.FRAMING_MIN_SCALE, emoji.FRAMING_TURN, emoji.FRAMING_MOVE = scale, turn, move
            spread = variety(generate, pixels, pairs, VARIETY_PROMPTS, ranker)
            ranked_captions = adherence(generate, ranker, captions)
            result["framings"].append({
                "scale": scale, "turn": turn, "move": move, "variety": spread["prompts"],
                "captions": {k: ranked_captions[k] for k in
                             ("count", "top5", "top1", "unframed")}})
            print(f"framing {scale:.2f}-1, ±{turn:g}°, move {move:g}: captions "
                  f"{ranked_captions['top5']:6.1%} / "
                  f"{ranked_captions['top1']:6.1%}{_framing_free(ranked_captions)}  "
                  "variety " + ", ".join(
                      f"{p!r} {v['ratio']:.2f} ({v.get('unframed_ratio', 0):.2f})"
                      for p, v in spread["prompts"].items()),
                  flush=True)
        # The margins without framing: what the subjects drawn add, and cost, alone.
        emoji.FRAMING_MIN_SCALE, emoji.FRAMING_TURN, emoji.FRAMING_MOVE = 1.0, 0.0, 0.0
        for margin in margins:
            emoji.VARIETY_MARGIN = margin
            pipe._prompt_cache.clear()  # matches are cached with their alternatives
            spread = variety(generate, pixels, pairs, ROOMY_PROMPTS, ranker)
            para = adherence(generate, ranker, paraphrases)
            result["margins"].append({"margin": margin, "variety": spread["prompts"],
                                      "paraphrases": {k: para[k] for k in
                                                      ("count", "top5", "top1", "unframed")}})
            print(f"margin {margin:.3f}: paraphrases {para['top5']:6.1%} / "
                  f"{para['top1']:6.1%}{_framing_free(para)}  variety " + ", ".join(
                      f"{p!r} {v['ratio']:.2f} ({v.get('unframed_ratio', 0):.2f})"
                      for p, v in spread["prompts"].items()),
                  flush=True)
    finally:
        (emoji.FRAMING_MIN_SCALE, emoji.FRAMING_TURN, emoji.FRAMING_MOVE,
         emoji.VARIETY_MARGIN) = saved
        pipe._prompt_cache.clear()
    return result


#: The knobs sheet: subjects drawn at each quality and style, and the prompts whose seeds
#: are shown (a fully specified subject, and one that leaves room).
SHEET_PROMPTS = ("a red apple", "a rocket", "a cat face", "a house")
SHEET_SEED_PROMPTS = ("a red apple", "a tree")


def knobs_sheet(generate: Generator, path: Path, side: int = 192) -> None:
    """What a user of the API sees of the built-in model's knobs, one row each: quality
    low / medium / high (a gpt-image name), style vivid / natural (dall-e-3), four seeds
    of SHEET_SEED_PROMPTS, and the edit "a green apple" of the apple with its top half
    masked (the picture, the mask, two seeds). Steps and guidance come from the served
    spec through the planner's own functions."""
    from diffuserve.service.planning import guidance_for, steps_for

    spec = builtin.builtin_spec()
    images: list[Image.Image] = []
    labels: list[str] = []

    def row(knob: str, steps: int, guidance: float) -> None:
        found = generate([(p, (1,)) for p in SHEET_PROMPTS], side, steps=steps,
                         guidance=guidance)
        images.extend(found_images[0] for found_images in found)
        labels.extend(f"{knob}: {steps} steps, g {guidance:g}" for _ in SHEET_PROMPTS)

    for quality in ("low", "medium", "high"):
        row(f"quality={quality}", steps_for(spec, quality), guidance_for(spec, None))
    for style in ("vivid", "natural"):
        row(f"style={style}", steps_for(spec, "standard"), guidance_for(spec, style))
    medium, plain = steps_for(spec, "medium"), guidance_for(spec, None)
    for prompt in SHEET_SEED_PROMPTS:
        images.extend(generate([(prompt, (0, 1, 2, 3))], side, steps=medium,
                               guidance=plain)[0])
        labels.extend(f"{prompt}, seed {seed}" for seed in (0, 1, 2, 3))
    picture = generate([("a red apple", (1,))], 256, steps=medium,
                       guidance=plain)[0][0].convert("RGB")
    mask = half_mask(256, "top")
    shown_mask = Image.new("RGB", mask.size, (204, 204, 204))
    shown_mask.paste((0, 0, 0), (0, 128, 256, 256))
    images.extend([picture, shown_mask, *edit(generate, picture, mask, "a green apple",
                                             EDIT_SEEDS)])
    labels.extend(["the picture", "mask: top half clear",
                   *(f'"a green apple", seed {seed}' for seed in EDIT_SEEDS)])
    sheet(images, labels, path, side, cols=4)


def add_generator_options(parser: argparse.ArgumentParser, batch: int) -> None:
    """The options :class:`Generator` reads (and the data folder), for every benchmark
    that draws with it."""
    parser.add_argument("--pipeline", type=Path, default=builtin.WEIGHTS_DIR,
                        help=f"an EmojiPipeline folder (default {builtin.WEIGHTS_DIR})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"a prepare-data output folder (default {DEFAULT_DATA})")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the spec's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the spec's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--runtime", choices=("torch", "onnx"),
                        help="what runs the UNet on a CPU (default: the spec's, onnx)")
    parser.add_argument("--batch", type=int, default=batch, help="images per pipeline call")


STUDIES = ("knobs", "edits", "variety", "sheet")


def _floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",")]


def _framings(text: str) -> list[tuple[float, float, float]]:
    triples = [tuple(float(v) for v in item.split(":")) for item in text.split(",")]
    if any(len(triple) != 3 for triple in triples):
        raise argparse.ArgumentTypeError("each framing is SCALE:TURN:MOVE")
    return [(a, b, c) for a, b, c in triples]


#: Steps at the served guidance, then guidance at fewer steps and at the standard and hd
#: step counts.
KNOB_SETTINGS = parse_knobs("4:4,5:4,6:4,7:4,8:4,10:4,16:4,32:4,6:2,6:3,7:2,7:3,"
                            "8:2,8:2.5,8:3,8:3.5,8:5,16:2,16:3,16:5")


def run_studies(args: argparse.Namespace, generate: Generator, ranker: Ranker,
                pixels: np.ndarray, entries: Sequence[Entry], sample: Sequence[Entry]) -> None:
    """The studies ``--study`` names, their results printed (and written to ``--json``)."""
    report: dict[str, Any] = {"pipeline": str(args.pipeline), "steps": generate.steps,
                              "guidance": generate.guidance}
    if "knobs" in args.study:
        report["knobs"] = knob_study(generate, ranker, args.data, sample[:args.fidelity],
                                     PARAPHRASES[: args.paraphrases], args.knobs)
    if "edits" in args.study:
        report["edits"] = found = edit_study(generate, args.data, entries, args.feathers or ())
        print(f"edits  {len(found['rows'])} edits: {found['follows']:.0%} nearer the "
              f"prompt's subject than the picture's (median ratio {found['ratio']:.2f}); "
              f"seam {found['seam']:.0f} (the pictures across the same line: "
              f"{found['picture_seam']:.0f})")
    if "variety" in args.study and (args.framings or args.margins):
        report["variety_study"] = variety_study(
            generate, ranker, pixels, sample[:args.fidelity], PARAPHRASES[: args.paraphrases],
            args.framings or (), args.margins or (), args.pairs)
    elif "variety" in args.study:
        report["variety"] = spread = variety(generate, pixels, args.pairs, ranker=ranker)
        for prompt, found in spread["prompts"].items():
            print(f"variety {prompt!r:<18} {found['seed_distance']:6.2f}  "
                  f"(ratio {found['ratio']:.2f} of the data's {spread['data_distance']:.2f}; "
                  f"framing-free {found.get('unframed_ratio', 0):.2f})")
    if "sheet" in args.study:
        knobs_sheet(generate, args.knobs_sheet)
        print(f"sheet  {args.knobs_sheet}")
    print(f"timing load {generate.load_s:.1f} s, {generate.images} images in "
          f"{generate.seconds:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generator_options(parser, batch=16)
    parser.add_argument("--count", type=int, default=200, help="captions sampled (seed 0)")
    parser.add_argument("--limit", type=int, help="use only the first N sampled captions")
    parser.add_argument("--paraphrases", type=int, default=len(PARAPHRASES),
                        help=f"use the first N paraphrases (default all {len(PARAPHRASES)})")
    parser.add_argument("--heldout", type=int, default=None,
                        help="use the first N held-out paraphrases (default all)")
    parser.add_argument("--alpha", type=int, default=100,
                        help="sampled captions for the alpha agreement (0: skip)")
    parser.add_argument("--pairs", type=int, default=2000, help="data pairs for the spread")
    parser.add_argument("--grid", type=Path, default=Path("docs/builtin-grid.png"))
    parser.add_argument("--variety-grid", type=Path, default=Path("docs/builtin-variety.png"))
    parser.add_argument("--transparent-grid", type=Path,
                        default=Path("docs/builtin-transparent.png"))
    parser.add_argument("--no-grid", dest="make_grid", action="store_false",
                        help="write neither grid")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--study", action="append", choices=STUDIES,
                        help="run only this study (repeatable): knobs (steps and guidance: "
                             "adherence and fidelity), edits, variety, sheet (the knobs "
                             "sheet)")
    parser.add_argument("--knobs", type=parse_knobs, default=KNOB_SETTINGS,
                        help="the knob study's steps:guidance pairs, e.g. 8:4,16:3")
    parser.add_argument("--fidelity", type=int, default=50,
                        help="sampled captions the knob and variety studies draw")
    parser.add_argument("--framings", type=_framings,
                        help="the variety study tries these framings, each the smallest "
                             "scale, the largest turn in degrees and the share of the room "
                             "the subject may move across, e.g. 1:0:0,0.9:6:0.5,0.8:12:1")
    parser.add_argument("--feathers", type=_floats,
                        help="the edit study's seam again for each of these feathers (share "
                             "of the side), e.g. 0,0.0078,0.0156,0.03125")
    parser.add_argument("--margins", type=_floats,
                        help="the variety study tries these margins of the prompt "
                             "index's alternatives, e.g. 0,0.05,0.1")
    parser.add_argument("--knobs-sheet", type=Path, default=Path("docs/builtin-knobs.png"))
    args = parser.parse_args()

    for need in (args.pipeline / "model_index.json", args.data / "manifest.jsonl"):
        if not need.is_file():
            parser.error(f"{need} does not exist (see --pipeline / --data)")
    entries = load_manifest(args.data)
    heldout = load_heldout()
    check_paraphrases(entries)
    check_paraphrases(entries, heldout)
    overlap = {p for p, _ in PARAPHRASES} & {p for p, _ in heldout}
    assert not overlap, f"prompts in both paraphrase sets: {sorted(overlap)}"
    pixels = eval_images(args.data, entries)
    ranker = Ranker(pixels, entries, unframed_images(args.data, entries))

    sample = random.Random(0).sample(entries, min(args.count, len(entries)))
    sample = sample[: args.limit] if args.limit is not None else sample
    generate = Generator(args)
    print(f"pipeline: {args.pipeline}  device: {generate.backend.device}  "
          f"steps: {generate.steps}  guidance: {generate.guidance}  "
          f"data: {len(entries)} images, {len(ranker.count)} concepts")
    if args.study:
        run_studies(args, generate, ranker, pixels, entries, sample)
        return

    captions = adherence(generate, ranker, [(e.caption, e.concept) for e in sample])
    paraphrased = adherence(generate, ranker, PARAPHRASES[: args.paraphrases])
    held = adherence(generate, ranker, heldout[: args.heldout])
    best = ceiling(args.data, ranker, entries, sample)
    alpha = alpha_agreement(generate, args.data, entries, sample, args.alpha) \
        if args.alpha else None
    spread = variety(generate, pixels, args.pairs, ranker=ranker)
    if args.make_grid:
        grid(generate, args.grid)
        variety_sheet(generate, args.variety_grid)
        transparent_sheet(generate, args.transparent_grid)

    for name, result in (("captions", captions), ("paraphrases", paraphrased),
                         ("held-out", held)):
        print(f"{name:<12} n={result['count']:<4} top-5 {result['top5']:6.1%} "
              f"(chance {result['chance_top5']:5.1%})  top-1 {result['top1']:6.1%} "
              f"(chance {result['chance_top1']:5.1%})  {result['seconds']:6.1f} s"
              f"{_framing_free(result)}")
    if best is not None:
        print(f"{'ceiling':<12} n={best['count']:<4} top-5 {best['top5']:6.1%}"
              f"{'':16}top-1 {best['top1']:6.1%}  (the sampled training images at 64 px)")
        for view, found in best["views"].items():
            if view != "as drawn":
                print(f"{'':13}{view + ':':<20}top-5 {found['top5']:6.1%}  "
                      f"top-1 {found['top1']:6.1%}{_framing_free(found)}")
    if alpha is not None:
        kind = "detail decoder" if alpha["detail_decoder"] else "autoencoder"
        for size in ALPHA_SIZES:
            found = alpha[str(size)]
            print(f"alpha {size:>3}px n={alpha['count']:<4} ({kind}) against the artwork's "
                  f"alpha: decoder IoU {found['decoder']['iou']:.3f} (error "
                  f"{found['decoder']['mae']:.1f}/255), model IoU {found['model']['iou']:.3f} "
                  f"(error {found['model']['mae']:.1f}/255)")
    print(f"variety      {len(VARIETY_SEEDS)} seeds, mean pairwise L2 against random data "
          f"pairs ({spread['data_distance']:.2f}):")
    for prompt, found in spread["prompts"].items():
        print(f"{'':13}{prompt!r:<18} {found['seed_distance']:6.2f}  "
              f"(ratio {found['ratio']:.2f}; framing-free {found.get('unframed_ratio', 0):.2f})")
    per_image = generate.seconds / max(1, generate.images)
    print(f"timing       load {generate.load_s:.1f} s, {generate.images} images in "
          f"{generate.seconds:.1f} s ({per_image * 1000:.0f} ms/image)")
    if args.make_grid:
        print(f"grids        {args.grid}, {args.variety_grid}, {args.transparent_grid}")
    if args.json:
        report = {
            "pipeline": str(args.pipeline), "data": str(args.data),
            "device": generate.backend.device, "steps": generate.steps,
            "guidance": generate.guidance, "captions": captions, "paraphrases": paraphrased,
            "heldout": held, "ceiling": best, "alpha": alpha, "variety": spread,
            "grid": str(args.grid) if args.make_grid else None,
            "variety_grid": str(args.variety_grid) if args.make_grid else None,
            "timing": {"load_s": generate.load_s, "images": generate.images,
                       "generate_s": generate.seconds},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"json         {args.json}")


if __name__ == "__main__":
    main()

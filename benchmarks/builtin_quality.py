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
random pairs of training images, for a subject the data shows once ("a red apple") and
for subjects whose skin tone the prompt leaves open. The grid shows 16 prompts at 256×256.

    python benchmarks/builtin_quality.py [--pipeline DIR] [--data DIR] [--json out.json]
    python benchmarks/builtin_quality.py --limit 16 --paraphrases 8 --grid /tmp/grid.png

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
from PIL import Image, ImageDraw, ImageFont

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


def shrink(image: Image.Image) -> np.ndarray:
    """An image as the ranking sees it: RGB on white, 32×32 (Lanczos)."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    rgb = image.convert("RGB").resize((EVAL_SIDE, EVAL_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


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
    """Nearest training images by L2 distance at 32×32."""

    def __init__(self, pixels: np.ndarray, entries: Sequence[Entry]) -> None:
        self.data = flat(pixels)
        self.norms = (self.data ** 2).sum(axis=1)
        self.concepts = [e.concept for e in entries]
        self.count = Counter(self.concepts)

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
                 size: int = 256, background: str = "opaque") -> list[list[Image.Image]]:
        """Images for (prompt, seeds) pairs, in order."""
        from diffuserve.engine.types import GenerationParams

        params = [GenerationParams(prompt=prompt, negative_prompt=None, width=size,
                                   height=size, num_inference_steps=self.steps,
                                   guidance_scale=self.guidance, seeds=tuple(seeds),
                                   background=background)
                  for prompt, seeds in jobs]
        out: list[list[Image.Image]] = []
        started = time.perf_counter()
        chunk: list[Any] = []
        for item in [*params, None]:
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


def adherence(generate: Generator, ranker: Ranker,
              prompts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Top-5/top-1 rates for (prompt, target concept) pairs; prompt ``i`` uses seed ``i``."""
    started = time.perf_counter()
    images = generate([(prompt, (i,)) for i, (prompt, _) in enumerate(prompts)])
    nearest = ranker.nearest(np.stack([shrink(found[0]) for found in images]))
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
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }


#: How the ceiling's training images are altered: as the model draws them, and as
#: geometric augmentation would (which the ranking cannot tell from other images).
CEILING_VIEWS = {
    "as drawn": lambda image: image,
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
        nearest = ranker.nearest(np.stack([shrink(alter(image)) for image in drawn]))
        names = [[ranker.concepts[j] for j in found] for found in nearest]
        views[view] = {
            "top5": statistics.fmean(e.concept in n for e, n in zip(sample, names, strict=True)),
            "top1": statistics.fmean(e.concept == n[0]
                                     for e, n in zip(sample, names, strict=True)),
        }
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
    (captions drawn transparent at 256², seed i, against the captioned image). Mean IoU
    of covered pixels and mean absolute alpha error (0–255)."""

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
        want = np.stack([render_rgba(data / "assets" / e.file, size)[..., 3] for e in chosen])

        def summary(found: np.ndarray, want: np.ndarray = want) -> dict[str, float]:
            return {"iou": statistics.fmean(_iou(f, w)
                                            for f, w in zip(found, want, strict=True)),
                    "mae": float(np.abs(found.astype(int) - want.astype(int)).mean())}

        results[str(size)] = {"decoder": summary(_alpha_at(decoded, size)),
                              "model": summary(_alpha_at(drawn, size))}
    return results


def mean_pairwise(vectors: np.ndarray) -> float:
    return statistics.fmean(float(np.linalg.norm(a - b))
                            for a, b in itertools.combinations(vectors, 2))


def variety(generate: Generator, pixels: np.ndarray, pairs: int) -> dict[str, Any]:
    """Mean pairwise distance of 4 seeds per prompt, against random training pairs."""
    rng = random.Random(1)
    data = flat(pixels)
    distances = []
    for _ in range(pairs):
        a, b = rng.sample(range(len(data)), 2)
        distances.append(float(np.linalg.norm(data[a] - data[b])))
    spread = statistics.fmean(distances)
    found = generate([(prompt, VARIETY_SEEDS) for prompt in VARIETY_PROMPTS])
    prompts = {}
    for prompt, images in zip(VARIETY_PROMPTS, found, strict=True):
        seeds = mean_pairwise(flat(np.stack([shrink(image) for image in images])))
        prompts[prompt] = {"seed_distance": seeds, "ratio": seeds / spread}
    return {"seeds": list(VARIETY_SEEDS), "data_distance": spread, "data_pairs": pairs,
            "prompts": prompts}


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
    ranker = Ranker(pixels, entries)

    sample = random.Random(0).sample(entries, min(args.count, len(entries)))
    sample = sample[: args.limit] if args.limit is not None else sample
    generate = Generator(args)
    print(f"pipeline: {args.pipeline}  device: {generate.backend.device}  "
          f"steps: {generate.steps}  guidance: {generate.guidance}  "
          f"data: {len(entries)} images, {len(ranker.count)} concepts")

    captions = adherence(generate, ranker, [(e.caption, e.concept) for e in sample])
    paraphrased = adherence(generate, ranker, PARAPHRASES[: args.paraphrases])
    held = adherence(generate, ranker, heldout[: args.heldout])
    best = ceiling(args.data, ranker, entries, sample)
    alpha = alpha_agreement(generate, args.data, entries, sample, args.alpha) \
        if args.alpha else None
    spread = variety(generate, pixels, args.pairs)
    if args.make_grid:
        grid(generate, args.grid)
        variety_sheet(generate, args.variety_grid)
        transparent_sheet(generate, args.transparent_grid)

    for name, result in (("captions", captions), ("paraphrases", paraphrased),
                         ("held-out", held)):
        print(f"{name:<12} n={result['count']:<4} top-5 {result['top5']:6.1%} "
              f"(chance {result['chance_top5']:5.1%})  top-1 {result['top1']:6.1%} "
              f"(chance {result['chance_top1']:5.1%})  {result['seconds']:6.1f} s")
    if best is not None:
        print(f"{'ceiling':<12} n={best['count']:<4} top-5 {best['top5']:6.1%}"
              f"{'':16}top-1 {best['top1']:6.1%}  (the sampled training images at 64 px)")
        for view, found in best["views"].items():
            if view != "as drawn":
                print(f"{'':13}{view + ':':<20}top-5 {found['top5']:6.1%}  "
                      f"top-1 {found['top1']:6.1%}")
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
              f"(ratio {found['ratio']:.2f})")
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

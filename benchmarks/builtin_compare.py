"""Two releases of the built-in model side by side at full scale: a sheet to look at.

For each caption, one row: the artwork enlarged to ``--size`` the way
``builtin_sharpness.py`` enlarges it (Lanczos, on white), the ``--before`` pipeline's
drawing and ``--pipeline``'s (seed 1, opaque), each cropped to its central ``--crop``
pixels at 1:1, so that what a 1024² answer shows is seen pixel for pixel.

    python benchmarks/builtin_compare.py --before OLD_WEIGHTS --sheet out.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builtin_quality import Generator, add_generator_options  # noqa: E402
from train_builtin.data import load_manifest  # noqa: E402
from train_builtin.prepare import render  # noqa: E402

#: Subjects with small features (eyes, mouths, lettering) where blur shows first.
CAPTIONS = ("a man detective, light skin tone", "a face with peeking eye",
            "clinking beer mugs", "a woman superhero, light skin tone")


def central(image: Image.Image, crop: int) -> Image.Image:
    left, top = (image.width - crop) // 2, (image.height - crop) // 2
    return image.convert("RGB").crop((left, top, left + crop, top + crop))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generator_options(parser, batch=4)
    parser.add_argument("--before", type=Path, required=True,
                        help="the other EmojiPipeline folder (e.g. a release's weights)")
    parser.add_argument("--caption", action="append",
                        help=f"a training caption (repeatable; default {CAPTIONS})")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--crop", type=int, default=384)
    parser.add_argument("--sheet", type=Path, required=True)
    args = parser.parse_args()

    captions = tuple(args.caption or CAPTIONS)
    files = {e.caption: e.file for e in load_manifest(args.data)}
    unknown = [c for c in captions if c not in files]
    if unknown:
        parser.error(f"not training captions: {unknown}")
    side = (args.size, args.size)
    columns = [[render(args.data / "assets" / files[c], 256) for c in captions]]
    columns[0] = [Image.fromarray(a).resize(side, Image.Resampling.LANCZOS) for a in columns[0]]
    for pipeline in (args.before, args.pipeline):
        generate = Generator(argparse.Namespace(**{**vars(args), "pipeline": pipeline}))
        columns.append([images[0] for images in generate([(c, (1,)) for c in captions],
                                                         args.size)])
    crop = args.crop
    sheet = Image.new("RGB", (crop * len(columns), crop * len(captions)), "white")
    for x, column in enumerate(columns):
        for y, image in enumerate(column):
            sheet.paste(central(image, crop), (x * crop, y * crop))
    sheet.save(args.sheet, optimize=True)
    print(f"{args.sheet}: artwork | {args.before} | {args.pipeline}, {len(captions)} rows")


if __name__ == "__main__":
    main()

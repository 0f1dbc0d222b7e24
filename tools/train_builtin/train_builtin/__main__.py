"""``python -m train_builtin prepare-data|train|detail|index|compact|export``: see ``--help``
of each."""

from __future__ import annotations

import argparse
from pathlib import Path

import platformdirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train_builtin")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare-data", help="fetch, caption and encode the data")
    default_cache = Path(platformdirs.user_cache_dir("diffuserve")) / "training"
    prepare.add_argument("--cache", type=Path, default=default_cache,
                         help=f"where the npm tarball is kept (default {default_cache})")
    prepare.add_argument("--out", type=Path, default=default_cache / "data")
    prepare.add_argument("--size", type=int, action="append",
                         help="image side to render (repeatable; default 64)")
    prepare.add_argument("--limit", type=int, help="keep only the first N images")
    prepare.add_argument("--no-vocabulary", dest="vocabulary", action="store_false",
                         help="skip the CLDR names and keywords (vocabulary.jsonl)")
    prepare.add_argument("--no-encode", dest="encode", action="store_false",
                         help="skip the MiniLM caption encodings")
    train = commands.add_parser("train", help="autoencoder → latents → diffusion → export")
    train.add_argument("--data", type=Path, default=default_cache / "data",
                       help="a prepare-data output folder")
    train.add_argument("--run", type=Path, default=default_cache / "run",
                       help="checkpoints and loss logs (a rerun resumes)")
    train.add_argument("--export", type=Path, default=None,
                       help="where the pipeline folder goes (default RUN/pipeline)")
    train.add_argument("--limit", type=int, help="train on the first N images only")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--ae-steps", type=int, default=3000)
    train.add_argument("--ae-batch", type=int, default=64)
    train.add_argument("--ae-lr", type=float, default=1e-3)
    train.add_argument("--decoder-steps", type=int, default=0,
                       help="then train the decoder alone (latents unchanged)")
    train.add_argument("--steps", type=int, default=20000)
    train.add_argument("--batch", type=int, default=128)
    train.add_argument("--lr", type=float, default=3e-4)
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--autoencoder", type=Path, default=None,
                       help="a trained autoencoder folder (e.g. an exported pipeline's vae/): "
                            "skip the autoencoder stage")
    train.add_argument("--coarse-captions", type=float, default=0.25,
                       help="how often a caption is swapped for its skin-tone-free concept")
    for flag, stage in (("--ae-seconds", "autoencoder"), ("--seconds", "diffusion"),
                        ("--decoder-seconds", "decoder")):
        train.add_argument(flag, type=float, default=None,
                           help=f"wall-clock budget of the {stage} stage: its first steps "
                                "are timed and it runs the steps that fit (at most its "
                                "--…steps), its schedule shortened to match")
    detail = commands.add_parser("detail", help="train a pipeline's detail decoder: the "
                                 "subject at 256 px with the artwork's alpha (autoencoder, "
                                 "latents and UNet unchanged)")
    detail.add_argument("--data", type=Path, default=default_cache / "data")
    detail.add_argument("--pipeline", type=Path, required=True, help="an exported pipeline")
    detail.add_argument("--out", type=Path, default=None,
                        help="where the pipeline with the new decoder goes (default: in place)")
    detail.add_argument("--run", type=Path, default=default_cache / "run")
    detail.add_argument("--limit", type=int)
    detail.add_argument("--seed", type=int, default=0)
    detail.add_argument("--steps", type=int, default=6000)
    detail.add_argument("--batch", type=int, default=16)
    detail.add_argument("--lr", type=float, default=1e-3)
    detail.add_argument("--checkpoint-every", type=int, default=200)
    detail.add_argument("--seconds", type=float, default=None,
                        help="wall-clock budget (the steps that fit, at most --steps)")
    detail.add_argument("--with-decoder", action="store_true",
                        help="train the autoencoder's decoder with it (its encoder, the "
                             "latents and the UNet unchanged): the built-in decoders' "
                             "last sittings")
    detail.add_argument("--adversarial", type=float, default=0.0,
                        help="train against a patch discriminator with this weight (0: "
                             "off; 0.5 is latent diffusion's): crisp edges where the "
                             "latents leave detail uncertain, instead of a blur")
    detail.add_argument("--adversarial-start", type=int, default=200,
                        help="steps the discriminator learns alone first (default 200)")
    index = commands.add_parser("index", help="match prompts in people's words: embed the "
                                "vocabulary into a pipeline's prompt index")
    index.add_argument("--data", type=Path, default=default_cache / "data")
    index.add_argument("--cache", type=Path, default=default_cache)
    index.add_argument("--pipeline", type=Path, required=True, help="an exported pipeline")
    index.add_argument("--threshold", type=float, default=0.5,
                       help="least cosine similarity of a prompt to a phrase for the "
                            "phrase's caption to be drawn (default 0.5)")
    index.add_argument("--description-weight", type=float, default=0.5,
                       help="how much a subject's whole description counts next to its "
                            "nearest phrase when a prompt is weighed against it (default "
                            "0.5; 0: the nearest phrase alone)")
    index.add_argument("--exclude", type=Path, default=None,
                       help="a held-out prompt file (benchmarks/data/heldout_paraphrases.tsv): "
                            "phrases that are its prompts word for word are left out")
    compact = commands.add_parser("compact", help="store a pipeline's UNet with 8-bit "
                                  "weights (in place; export does this already)")
    compact.add_argument("--pipeline", type=Path, required=True, help="an exported pipeline")
    export_cmd = commands.add_parser("export", help="export a (possibly unfinished) run")
    export_cmd.add_argument("--run", type=Path, default=default_cache / "run")
    export_cmd.add_argument("--out", type=Path, required=True)
    export_cmd.add_argument("--autoencoder", type=Path, default=None,
                            help="the autoencoder a run was started with (--autoencoder)")
    args = parser.parse_args(argv)
    if args.command == "export":
        from train_builtin.pipeline import export_from_run

        print(f"exported → {export_from_run(args.run, args.out, args.autoencoder)}")
        return 0
    if args.command == "compact":
        from train_builtin.pipeline import compact_pipeline

        print(f"8-bit UNet → {compact_pipeline(args.pipeline)}")
        return 0
    if args.command == "detail":
        from train_builtin.pipeline import run_detail_decoder

        print(f"detail decoder → {run_detail_decoder(args)}")
        return 0
    if args.command == "index":
        from train_builtin.pipeline import build_index

        folder = build_index(args.data, args.pipeline, args.threshold, args.cache,
                             args.exclude, args.description_weight)
        print(f"prompt index → {folder}")
        return 0
    if args.command == "train":
        from train_builtin.pipeline import run_training

        exported = run_training(args)
        print(f"exported → {exported}")
        return 0

    from train_builtin.prepare import prepare as run_prepare

    entries = run_prepare(args.cache, args.out, tuple(args.size or (64,)), args.encode,
                          args.limit)
    concepts = len({entry.concept for entry in entries})
    print(f"{len(entries)} images, {concepts} concepts → {args.out}")
    if args.vocabulary:
        from train_builtin.pipeline import write_data_vocabulary

        print(f"{write_data_vocabulary(args.cache, args.out)} phrases → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

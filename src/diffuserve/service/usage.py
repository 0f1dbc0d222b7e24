"""Token accounting in OpenAI's terms, for the ``usage`` of GPT-image responses.

Input text tokens are the prompt's length in the serving model's own tokenizer. Output
image tokens follow OpenAI's published table for gpt-image-1 (per size and quality, for
the three standard sizes); other sizes scale the square size's figure by their area,
and ``xhigh``/``max`` scale ``high`` by 1.5 and 2 (OpenAI publishes no figures for them).
"""

from __future__ import annotations

import math

from diffuserve.protocol.common import TokenDetails, Usage

#: OpenAI's output image tokens for gpt-image-1, by quality and (width, height).
OUTPUT_IMAGE_TOKENS = {
    "low": {(1024, 1024): 272, (1024, 1536): 408, (1536, 1024): 400},
    "medium": {(1024, 1024): 1056, (1024, 1536): 1584, (1536, 1024): 1568},
    "high": {(1024, 1024): 4160, (1024, 1536): 6240, (1536, 1024): 6208},
}
_ABOVE_HIGH = {"xhigh": 1.5, "max": 2.0}


def output_image_tokens(width: int, height: int, quality: str) -> int:
    """Tokens for one output image of ``width``×``height`` at a resolved ``quality``."""
    factor = _ABOVE_HIGH.get(quality, 1.0)
    table = OUTPUT_IMAGE_TOKENS["high" if quality in _ABOVE_HIGH else quality]
    tokens: float
    if (width, height) in table:
        tokens = table[(width, height)]
    else:
        tokens = table[(1024, 1024)] * width * height / (1024 * 1024)
    return max(1, round(tokens * factor))


def input_image_tokens(width: int, height: int, fidelity: str = "low") -> int:
    """Tokens of one input image, by OpenAI's rule for image inputs: at high fidelity the
    image is scaled into 2048×2048, then its shorter side to 768, and costs 85 plus 170
    per 512-pixel tile; at low fidelity, 85."""
    if fidelity != "high":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    return 85 + 170 * tiles


def usage_for(*, text_tokens: int, image_tokens_in: int, images_out: int, width: int,
              height: int, quality: str) -> Usage:
    output = images_out * output_image_tokens(width, height, quality)
    input_tokens = text_tokens + image_tokens_in
    return Usage(
        input_tokens=input_tokens,
        input_tokens_details=TokenDetails(text_tokens=text_tokens, image_tokens=image_tokens_in),
        output_tokens=output,
        output_tokens_details=TokenDetails(text_tokens=0, image_tokens=output),
        total_tokens=input_tokens + output,
    )

"""The frozen text encoder's sentence-level view, on top of the served pipeline's.

Its token states condition the diffusion model through cross-attention; its mean-pooled,
normalised sentence embeddings place paraphrases ("a kitty") near captions ("a cat").
Loading and tokenization are :mod:`diffuserve.builtin.text_encoder`'s, so that the
captions are encoded exactly as the pipeline will encode prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffuserve.builtin.text_encoder import MAX_TOKENS, load_text_encoder, token_states


@dataclass
class Encoded:
    states: Any  # (N, MAX_TOKENS, 384) float
    mask: Any  # (N, MAX_TOKENS) int, 1 for real tokens
    pooled: Any  # (N, 384) float, unit length


class TextEncoder:
    """MiniLM-L6, frozen, on the CPU by default, encoding texts in batches."""

    def __init__(self, folder: Path | None = None, device: str = "cpu") -> None:
        self.model, self.tokenizer = load_text_encoder(device=device, folder=folder)
        self.device = device

    def encode(self, texts: list[str], batch_size: int = 256) -> Encoded:
        import torch

        if not texts:
            width = self.model.config.hidden_size
            return Encoded(torch.zeros(0, MAX_TOKENS, width),
                           torch.zeros(0, MAX_TOKENS, dtype=torch.long), torch.zeros(0, width))
        states, masks, pooled = [], [], []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                hidden, mask = token_states(self.model, self.tokenizer,
                                            texts[start:start + batch_size])
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
                states.append(hidden.cpu())
                masks.append(mask.cpu())
                pooled.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
        return Encoded(torch.cat(states), torch.cat(masks), torch.cat(pooled))

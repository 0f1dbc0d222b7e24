"""Prompts in people's own words: matching a prompt to the subjects the model knows.

The denoiser was trained on one caption per image ("a cat face", "a face with tears of
joy"). MiniLM, its text encoder, is a sentence-similarity model: its mean-pooled sentence
embedding places "a kitty" next to "a cat face: animal, cat, face, kitten, kitty, pet".
The index holds the sentence embeddings of every phrase the emoji data and CLDR give a
subject (names, short names, keywords; built by the trainer's ``index`` command), each
pointing at the caption the subject was trained with. A prompt whose nearest phrase is
at least ``threshold`` alike is drawn with that phrase's caption; any other prompt is
drawn from its own words.

Stored in the pipeline folder as ``prompts/index.safetensors`` (the embeddings as int8,
unit vectors scaled by 127, and each row's target) and ``prompts/index.json`` (the
phrases, the targets, the threshold).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FOLDER = "prompts"
WEIGHTS_FILE = "index.safetensors"
TEXT_FILE = "index.json"
#: Unit vectors are stored as round(127 × v): cosine similarities stay within ~0.01.
INT8_SCALE = 127.0


@dataclass(frozen=True)
class Match:
    """What a prompt is drawn with: the caption it matched (or None) and how alike."""

    prompt: str
    phrase: str | None
    caption: str | None
    similarity: float

    @property
    def text(self) -> str:
        """The text the denoiser is conditioned on."""
        return self.caption if self.caption is not None else self.prompt


class PromptIndex:
    """Phrases, their sentence embeddings and the training caption each points at."""

    def __init__(self, phrases: Sequence[str], targets: Sequence[str],
                 rows: np.ndarray, embeddings: np.ndarray, threshold: float) -> None:
        if embeddings.ndim != 2 or len(embeddings) != len(phrases) or len(rows) != len(phrases):
            raise ValueError("the index needs one embedding and one target per phrase")
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= len(targets)):
            raise ValueError("an index row points at no target")
        self.phrases = list(phrases)
        self.targets = list(targets)
        self.rows = rows.astype(np.int64)
        self._stored = self.quantize(embeddings)  # what save() writes, as loaded
        self._matrix = torch.from_numpy(self._stored.astype(np.float32) / INT8_SCALE)
        self.threshold = float(threshold)

    @staticmethod
    def quantize(embeddings: np.ndarray) -> np.ndarray:
        if embeddings.dtype == np.int8:
            return embeddings
        return np.clip(np.round(embeddings * INT8_SCALE), -127, 127).astype(np.int8)

    def __len__(self) -> int:
        return len(self.phrases)

    def match(self, prompts: Sequence[str], embeddings: torch.Tensor) -> list[Match]:
        """The match of each prompt, given the prompts' unit sentence embeddings. Of
        equally alike phrases the first wins (the trainer lists captions first). A prompt
        without a letter or digit (the empty prompt of a variation or of unconditional
        guidance) asks for no subject and never matches one."""
        scores = embeddings.float().cpu() @ self._matrix.T
        best, where = scores.max(dim=1)
        out = []
        for prompt, score, row in zip(prompts, best.tolist(), where.tolist(), strict=True):
            if score >= self.threshold and any(c.isalnum() for c in prompt):
                out.append(Match(prompt, self.phrases[row], self.targets[self.rows[row]], score))
            else:
                out.append(Match(prompt, None, None, score))
        return out

    def save(self, pipeline_folder: Path) -> Path:
        from safetensors.numpy import save_file

        folder = Path(pipeline_folder) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self._stored, "rows": self.rows.astype(np.int32)},
                  str(folder / WEIGHTS_FILE))
        (folder / TEXT_FILE).write_text(json.dumps(
            {"threshold": self.threshold, "targets": self.targets, "phrases": self.phrases},
            ensure_ascii=False, indent=0), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, pipeline_folder: Path) -> PromptIndex | None:
        """The index of a pipeline folder, or None where it has none."""
        from safetensors.numpy import load_file

        folder = Path(pipeline_folder) / FOLDER
        if not (folder / WEIGHTS_FILE).is_file():
            return None
        arrays = load_file(str(folder / WEIGHTS_FILE))
        text = json.loads((folder / TEXT_FILE).read_text(encoding="utf-8"))
        return cls(text["phrases"], text["targets"], arrays["rows"], arrays["embeddings"],
                   text["threshold"])

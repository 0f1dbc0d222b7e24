"""Prompts in people's own words: matching a prompt to the subjects the model knows.

The denoiser was trained on one caption per image ("a cat face", "a face with tears of
joy"). MiniLM, its text encoder, is a sentence-similarity model: its mean-pooled sentence
embedding places "a kitty" next to "a cat face: animal, cat, face, kitten, kitty, pet".
The index holds the sentence embeddings of every phrase the emoji data and CLDR give a
subject (names, short names, keywords; built by the trainer's ``index`` command), each
pointing at the caption the subject was trained with.

A prompt that is one of the training captions, word for word (case, articles and
spacing aside), is drawn with that caption. Any other prompt is weighed against every
subject: how alike its nearest phrase of that subject is, plus ``description_weight``
times how alike the subject's description is (all its keywords in one phrase), so that
a word CLDR gives one subject only by chance ("a smartphone" is a keyword of "a
wireless" alone) does not outweigh a subject whose whole description fits. The best
subject is drawn when its nearest phrase is at least ``threshold`` alike; any other
prompt is drawn from its own words.

Stored in the pipeline folder as ``prompts/index.safetensors`` (the embeddings as int8,
unit vectors scaled by 127, each row's target and each target's description row) and
``prompts/index.json`` (the phrases, the targets, the threshold, the description weight).
"""

from __future__ import annotations

import json
import re
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
#: What a prompt and a phrase may differ by and still be the same words.
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")
_SPACE = re.compile(r"\s+")


def same_words(text: str) -> str:
    """``text`` without case, a leading article, runs of spaces or final full stops."""
    words = _SPACE.sub(" ", text.casefold()).strip().rstrip(".!").strip()
    return _ARTICLE.sub("", words)


@dataclass(frozen=True)
class Match:
    """What a prompt is drawn with: the caption it matched (or None) and how alike."""

    prompt: str
    phrase: str | None
    caption: str | None
    similarity: float
    #: The captions of every subject weighed within the margin :meth:`PromptIndex.match`
    #: was given of the best one (the best first): what the prompt leaves open, e.g. "a
    #: flower" between the white flower, the blossom and the wilted flower. Empty where
    #: the prompt names one subject (a caption word for word) or matched none.
    alternatives: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The text the denoiser is conditioned on."""
        return self.caption if self.caption is not None else self.prompt


class PromptIndex:
    """Phrases, their sentence embeddings and the training caption each points at."""

    def __init__(self, phrases: Sequence[str], targets: Sequence[str],
                 rows: np.ndarray, embeddings: np.ndarray, threshold: float,
                 descriptions: np.ndarray | None = None,
                 description_weight: float = 0.0) -> None:
        """``descriptions``: for each target, the row of its description phrase (-1:
        none); without them, or with ``description_weight`` 0, the nearest phrase alone
        decides."""
        if embeddings.ndim != 2 or len(embeddings) != len(phrases) or len(rows) != len(phrases):
            raise ValueError("the index needs one embedding and one target per phrase")
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= len(targets)):
            raise ValueError("an index row points at no target")
        if descriptions is None:
            descriptions = np.full(len(targets), -1)
        if len(descriptions) != len(targets) or (
                len(descriptions) and (int(descriptions.min()) < -1 or
                                       int(descriptions.max()) >= len(phrases))):
            raise ValueError("the index needs one description row (or -1) per target")
        if any(rows[row] != target for target, row in enumerate(descriptions) if row >= 0):
            raise ValueError("a target's description is another target's phrase")
        self.phrases = list(phrases)
        self.targets = list(targets)
        self.rows = rows.astype(np.int64)
        self.descriptions = np.asarray(descriptions).astype(np.int64)
        self.description_weight = float(description_weight)
        self._stored = self.quantize(embeddings)  # what save() writes, as loaded
        self._matrix = torch.from_numpy(self._stored.astype(np.float32) / INT8_SCALE)
        self._rows = torch.from_numpy(self.rows)
        self._described = torch.from_numpy(self.descriptions >= 0)
        self._description_rows = torch.from_numpy(np.maximum(self.descriptions, 0))
        #: The targets (the captions the model was trained on) by their words.
        self._verbatim: dict[str, int] = {}
        for target, text in enumerate(self.targets):
            self._verbatim.setdefault(same_words(text), target)
        self.threshold = float(threshold)

    @staticmethod
    def quantize(embeddings: np.ndarray) -> np.ndarray:
        if embeddings.dtype == np.int8:
            return embeddings
        return np.clip(np.round(embeddings * INT8_SCALE), -127, 127).astype(np.int8)

    def __len__(self) -> int:
        return len(self.phrases)

    def match(self, prompts: Sequence[str], embeddings: torch.Tensor,
              margin: float = 0.0) -> list[Match]:
        """The match of each prompt, given the prompts' unit sentence embeddings (see
        the module's description). A prompt without a letter or digit (the empty prompt
        of a variation or of unconditional guidance) asks for no subject and never
        matches one. With a ``margin``, each match lists the subjects weighed within it
        of the best whose nearest phrase reaches the threshold too (its
        ``alternatives``)."""
        scores = embeddings.float().cpu() @ self._matrix.T  # (prompts, phrases)
        # Each target's nearest phrase: the highest score among its rows, and which row.
        count = len(self.targets)
        nearest = torch.full((len(prompts), count), -2.0).scatter_reduce(
            1, self._rows.expand_as(scores), scores, reduce="amax")
        weighed = nearest + self.description_weight * torch.where(
            self._described, scores[:, self._description_rows], nearest)
        best = weighed.max(dim=1, keepdim=True).values
        out = []
        for i, prompt in enumerate(prompts):
            if not any(c.isalnum() for c in prompt):
                out.append(Match(prompt, None, None, float(scores[i].max())))
                continue
            verbatim = self._verbatim.get(same_words(prompt))
            if verbatim is not None:
                text = self.targets[verbatim]
                out.append(Match(prompt, text, text, 1.0))
                continue
            # Of equally weighed subjects, the one whose nearest phrase is listed first
            # (the trainer lists captions first): a caption shared as another subject's
            # alias stays its own subject's.
            row = min(self._nearest_row(scores[i], int(target))
                      for target in (weighed[i] == best[i]).nonzero().flatten())
            target = int(self._rows[row])
            score = float(scores[i, row].item())
            if score >= self.threshold:
                out.append(Match(prompt, self.phrases[row], self.targets[target], score,
                                 self._alternatives(weighed[i], nearest[i], target, margin)))
            else:
                out.append(Match(prompt, None, None, float(scores[i].max())))
        return out

    def _alternatives(self, weighed: torch.Tensor, nearest: torch.Tensor, best: int,
                      margin: float) -> tuple[str, ...]:
        """The captions of the subjects weighed within ``margin`` of ``best``'s weight
        (one prompt's weights and nearest-phrase scores), ``best`` first, the rest by
        weight; empty when only ``best`` is that near."""
        if margin <= 0:
            return ()
        near = ((weighed >= weighed[best] - margin) & (nearest >= self.threshold)).nonzero()
        others = sorted((int(t) for t in near.flatten() if int(t) != best),
                        key=lambda t: -float(weighed[t]))
        return (self.targets[best], *(self.targets[t] for t in others)) if others else ()

    def _nearest_row(self, scores: torch.Tensor, target: int) -> int:
        """The first of the target's phrases that is most alike (``scores``: one prompt's
        similarity to every phrase)."""
        own = (self._rows == target).nonzero().flatten()
        return int(own[scores[own].argmax()])

    def save(self, pipeline_folder: Path) -> Path:
        from safetensors.numpy import save_file

        folder = Path(pipeline_folder) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self._stored, "rows": self.rows.astype(np.int32),
                   "descriptions": self.descriptions.astype(np.int32)},
                  str(folder / WEIGHTS_FILE))
        (folder / TEXT_FILE).write_text(json.dumps(
            {"threshold": self.threshold, "description_weight": self.description_weight,
             "targets": self.targets, "phrases": self.phrases},
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
                   text["threshold"], arrays.get("descriptions"),
                   text.get("description_weight", 0.0))

"""The words people use for each subject: CLDR names and keywords, emoji short names.

The model is trained on one caption per image (its CLDR short name, see
:mod:`train_builtin.data`); people ask for "a kitty", "a laughing face" or "the japanese
flag". This module gathers, for every image, the other names the emoji data and CLDR
give it — the CLDR text-to-speech name, the ``emoji`` package's aliases (GitHub short
codes), the CLDR keywords — and writes them as phrases, each pointing at the caption the
model was trained on: the *target* it is drawn with. Phrases about a subject without a
skin tone point at its skin-tone-free concept ("a waving hand"), which the model draws in
any tone; phrases that name a tone point at that tone's caption.

Source: the npm packages ``cldr-annotations-full`` and ``cldr-annotations-derived-full``
(Unicode CLDR 48, Unicode-3.0 licence), English annotations only, fetched with
``npm pack`` into the cache and checked against their SHA-256 like the images.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from train_builtin.data import _VARIATION_SELECTOR, Entry, caption_for, fetch_npm

CLDR_VERSION = "48.2.0"
CLDR_PACKAGES = {
    # package → (file name of ``npm pack``, SHA-256, member with the English annotations)
    "cldr-annotations-full": (
        f"cldr-annotations-full-{CLDR_VERSION}.tgz",
        "28576e51225deb51e3ddd734b0f824a0079682cb5d8c27faa9f68149317a14d1",
        "package/annotations/en/annotations.json",
    ),
    "cldr-annotations-derived-full": (
        f"cldr-annotations-derived-full-{CLDR_VERSION}.tgz",
        "4be946ff5815f806ec78b50363d577a769f2fbfb90c6380a44e161a92436996e",
        "package/annotationsDerived/en/annotations.json",
    ),
}
CLDR_LICENSE = "Unicode-3.0"
VOCABULARY_FILE = "vocabulary.jsonl"

_SKIN_TONE_MODIFIERS = re.compile("[\U0001f3fb-\U0001f3ff]")
_TONE_WORDS = re.compile(r"(?:medium-)?(?:light|dark) skin tone|medium skin tone|skin tone")


@dataclass(frozen=True)
class Annotation:
    """CLDR's English text-to-speech name and keywords of one emoji sequence."""

    name: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class Phrase:
    """A way to ask for a subject, and the training caption it is drawn with."""

    text: str
    target: str
    kind: str  # caption | concept | name | alias | keyword | description


def fetch_cldr(cache_dir: Path) -> dict[str, Annotation]:
    """The English CLDR annotations, base and derived (skin tones, sequences, flags),
    keyed by the emoji with its variation selectors removed."""
    annotations: dict[str, Annotation] = {}
    for package, (file_name, sha256, member) in CLDR_PACKAGES.items():
        tarball = fetch_npm(cache_dir, package, CLDR_VERSION, file_name, sha256)
        with tarfile.open(tarball) as archive:
            handle = archive.extractfile(member)
            if handle is None:
                raise RuntimeError(f"{tarball} has no {member}")
            document = json.load(handle)
        root = document.get("annotations") or document["annotationsDerived"]
        for text, value in root["annotations"].items():
            names = value.get("tts") or []
            if names:
                annotations.setdefault(text.replace(_VARIATION_SELECTOR, ""), Annotation(
                    names[0], tuple(value.get("default") or ())))
    return annotations


def _subject(name: str, emoji_text: str) -> str:
    """A CLDR name or alias as the captions write subjects ("cat face" → "a cat face");
    names with parts ("flag: Japan", "keycap: 1") are kept as CLDR writes them."""
    if ": " in name:
        return name
    words = name.strip(":").replace("_", " ").strip()
    return caption_for(":" + words.replace(" ", "_") + ":", emoji_text)[1]


def phrases_for(entries: Sequence[Entry], annotations: Mapping[str, Annotation],
                aliases: Mapping[str, Sequence[str]]) -> list[Phrase]:
    """Every phrase of every image, deduplicated, captions and concepts first (so that
    where two rows embed alike, the training caption itself wins).

    ``aliases``: for each emoji (variation selectors removed) its short-code aliases.
    Keywords that CLDR gives one concept alone become phrases of their own ("a kitten");
    all of a subject's keywords also make one description ("a cat face: animal, cat,
    face, kitten, kitty, pet").
    """
    concept_keywords: dict[str, set[str]] = {}
    base_of: dict[str, Annotation | None] = {}
    for entry in entries:
        bare = entry.emoji.replace(_VARIATION_SELECTOR, "")
        base = annotations.get(_SKIN_TONE_MODIFIERS.sub("", bare))
        base_of[entry.file] = base
        keywords = concept_keywords.setdefault(entry.concept, set())
        if base is not None:
            keywords.update(k for k in base.keywords if not _TONE_WORDS.fullmatch(k))
    owners = Counter(k.casefold() for words in concept_keywords.values() for k in words)

    rows: list[Phrase] = []
    for entry in entries:
        rows.append(Phrase(entry.caption, entry.caption, "caption"))
        if entry.concept != entry.caption:
            rows.append(Phrase(entry.concept, entry.concept, "concept"))
    for entry in entries:
        base = base_of[entry.file]
        if base is not None:
            rows.append(Phrase(_subject(base.name, entry.emoji), entry.concept, "name"))
        stripped = _SKIN_TONE_MODIFIERS.sub("", entry.emoji.replace(_VARIATION_SELECTOR, ""))
        for alias in aliases.get(stripped, ()):
            rows.append(Phrase(_subject(alias, entry.emoji), entry.concept, "alias"))
    for concept, keywords in concept_keywords.items():
        if not keywords:
            continue
        ordered = sorted(keywords, key=str.casefold)
        rows.append(Phrase(f"{concept}: {', '.join(ordered)}", concept, "description"))
        for keyword in ordered:
            if owners[keyword.casefold()] == 1 and keyword.casefold() != concept.casefold():
                rows.append(Phrase(_subject(keyword, ""), concept, "keyword"))
    seen: set[tuple[str, str]] = set()
    unique = []
    for row in rows:
        key = (row.text.casefold(), row.target)
        if key not in seen and row.text.strip():
            seen.add(key)
            unique.append(row)
    return unique


def emoji_aliases() -> dict[str, list[str]]:
    """The ``emoji`` package's short-code aliases, keyed by the bare emoji."""
    import emoji

    return {text.replace(_VARIATION_SELECTOR, ""): list(data.get("alias", ()))
            for text, data in emoji.EMOJI_DATA.items() if data.get("alias")}


def write_vocabulary(path: Path, phrases: Iterable[Phrase]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for phrase in phrases:
            fh.write(json.dumps({"text": phrase.text, "target": phrase.target,
                                 "kind": phrase.kind}, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_vocabulary(path: Path) -> list[Phrase]:
    with path.open(encoding="utf-8") as fh:
        return [Phrase(**json.loads(line)) for line in fh if line.strip()]


def read_prompt_pairs(path: Path) -> list[tuple[str, str]]:
    """A prompt file such as the held-out paraphrases: ``prompt<TAB>concept`` lines,
    ``#`` comments and blank lines skipped."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            prompt, concept = line.split("\t")
            pairs.append((prompt.strip(), concept.strip()))
    return pairs

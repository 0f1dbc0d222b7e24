"""A model's LoRA adapters by name: the ones its models-file entry declares, and every
``*.safetensors`` file in its ``adapters_dir`` (named by the file's stem, looked up
afresh on each request, so a file dropped in is usable without a restart).

Clients only ever name adapters; a name never reaches the file system unchecked (it must
be one of the names listed here), so a path or a URL in a request is simply an unknown
name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from diffuserve.config import ModelSpec
from diffuserve.config.adapters import ADAPTER_NAME_PATTERN, AdapterSpec

ADAPTER_NAME = re.compile(ADAPTER_NAME_PATTERN)

#: One chosen adapter: its name and scale.
Choice = tuple[str, float]


@dataclass(frozen=True)
class AdapterSource:
    """Where an adapter's weights are: ``source`` (Hub id, folder or ``.safetensors``
    file) and, within a repository or folder, ``weight_name``; ``version`` changes when a
    file in the adapters folder is replaced, so the engine loads it again."""

    name: str
    source: str
    weight_name: str | None = None
    scale: float = 1.0
    version: tuple[int, int] | None = None

    def location(self) -> tuple[str, str | None]:
        """What diffusers' ``load_lora_weights`` takes: a folder or Hub id, and the file
        within it."""
        path = Path(self.source).expanduser()
        if self.weight_name is None and path.suffix == ".safetensors" and path.is_file():
            return str(path.parent), path.name
        return (str(path) if path.exists() else self.source), self.weight_name


class AdapterLibrary:
    """The adapters one model (``spec``) may be asked for, by name."""

    def __init__(self, spec: ModelSpec) -> None:
        self.model = spec.name
        self._declared = {adapter.name: adapter for adapter in spec.adapters}
        self._folder = Path(spec.adapters_dir) if spec.adapters_dir is not None else None

    def __bool__(self) -> bool:
        return bool(self._declared) or self._folder is not None

    def _folder_files(self) -> dict[str, os.DirEntry[str]]:
        if self._folder is None:
            return {}
        try:
            entries = list(os.scandir(self._folder))
        except OSError:
            return {}
        found: dict[str, os.DirEntry[str]] = {}
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if (suffix == ".safetensors" and ADAPTER_NAME.match(stem)
                    and entry.is_file(follow_symlinks=True)):
                found[stem] = entry
        return found

    def names(self) -> list[str]:
        """Every adapter name this model answers to now (declared ones first)."""
        return [name for name, _ in self.defaults()]

    def defaults(self) -> list[Choice]:
        """Every adapter name this model answers to now, with its default scale (declared
        ones first), from one look at the folder."""
        return [*((name, adapter.scale) for name, adapter in self._declared.items()),
                *((name, 1.0) for name in sorted(self._folder_files())
                  if name not in self._declared)]

    def find(self, name: str) -> AdapterSource | None:
        """Where adapter ``name`` is, or None when the model has no such adapter."""
        if not ADAPTER_NAME.match(name):
            return None
        declared: AdapterSpec | None = self._declared.get(name)
        if declared is not None:
            return AdapterSource(name, declared.source, declared.weight_name, declared.scale)
        if self._folder is None:
            return None
        # One file looked up, not the folder listed (a name holds no path separator:
        # ADAPTER_NAME): this runs for every adapter of every pipeline call.
        path = self._folder / f"{name}.safetensors"
        try:
            stat = path.stat()
        except OSError:
            return None
        if not S_ISREG(stat.st_mode):
            return None
        return AdapterSource(name, str(path), None, 1.0,
                             version=(stat.st_mtime_ns, stat.st_size))

    def unknown(self, choices: tuple[Choice, ...]) -> str | None:
        """The first chosen name this model has no adapter for, if any."""
        return next((name for name, _ in choices if self.find(name) is None), None)


def canonical(choices: tuple[Choice, ...]) -> tuple[Choice, ...]:
    """One order for the same adapters (stacking adds them up, so order is meaningless),
    scale 0 left out (it draws as if the adapter were absent): equal sets batch together."""
    return tuple(sorted((name, float(scale)) for name, scale in choices if scale != 0.0))

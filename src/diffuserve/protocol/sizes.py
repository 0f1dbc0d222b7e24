"""``size``: the one value type of a requested image size, parsed once."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: ``WIDTHxHEIGHT`` as OpenAI spells it: sides of 2 to 5 digits, no leading zero.
_SIZE_RE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")


@dataclass(frozen=True)
class Size:
    """A requested size: ``WIDTHxHEIGHT``, or :data:`AUTO` (no sides: planning picks
    them, from the input image where there is one). ``str()`` spells it as requested."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Size | None:
        """``auto`` or a well-formed ``WIDTHxHEIGHT``; None for anything else."""
        if text == "auto":
            return AUTO
        match = _SIZE_RE.match(text)
        return None if match is None else cls(int(match.group(1)), int(match.group(2)))

    @property
    def is_auto(self) -> bool:
        return self == AUTO

    def __str__(self) -> str:
        return "auto" if self.is_auto else f"{self.width}x{self.height}"


AUTO = Size(0, 0)

"""``size``: parsed once into a value that spells itself as it was asked for."""

from __future__ import annotations

import pytest

from diffuserve.protocol.sizes import AUTO, Size


@pytest.mark.parametrize(("text", "size"), [
    ("1024x1024", Size(1024, 1024)), ("1536x1024", Size(1536, 1024)), ("16x48", Size(16, 48)),
    ("99999x10", Size(99999, 10)), ("auto", AUTO),
])
def test_a_well_formed_size_is_parsed_and_spelt_as_asked(text: str, size: Size) -> None:
    assert Size.parse(text) == size
    assert str(size) == text


@pytest.mark.parametrize("text", ["", "large", "1024", "1024X1024", "1024x1024px", "0x0",
                                  "-256x256", " 256x256", "0256x256", "1x1", "100000x10",
                                  "Auto", "256×256"])
def test_anything_else_is_no_size(text: str) -> None:
    assert Size.parse(text) is None


def test_only_auto_is_auto() -> None:
    assert AUTO.is_auto and not Size(1024, 1024).is_auto

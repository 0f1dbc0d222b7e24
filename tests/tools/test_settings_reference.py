"""docs/CONFIGURATION.md is what the settings model says today."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import settings_reference  # noqa: E402

from diffuserve.config import Settings  # noqa: E402


def test_the_configuration_reference_is_not_stale() -> None:
    assert settings_reference.TARGET.read_text() == settings_reference.render(), (
        "docs/CONFIGURATION.md is stale: run python tools/settings_reference.py")


def test_every_setting_is_in_the_reference() -> None:
    text = settings_reference.render()
    for name in Settings.model_fields:
        assert f"`DIFFUSERVE_{name.upper()}`" in text

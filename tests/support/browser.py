"""Debian's chromium for the browser tests, and the key of their keyed server."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("DIFFUSERVE_CHROMIUM", "/usr/bin/chromium")
KEY = "sk-playground-right-key-0123"


def chromium_path() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: scripts/test-setup.sh "
                    "(the README's second command) installs it (apt-get install chromium), "
                    "or DIFFUSERVE_CHROMIUM names another binary")
    return found

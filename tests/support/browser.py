"""Debian's chromium for the browser tests, the key of their keyed server, and what the
tests do with a page: open it, wait for a state, record the forms it sends."""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.support.live_server import LiveServer

CHROMIUM = os.environ.get("DIFFUSERVE_CHROMIUM", "/usr/bin/chromium")
KEY = "sk-playground-right-key-0123"
#: Long enough for a busy two-core machine.
DRAW_TIMEOUT_MS = 90_000

#: Records the multipart forms the page sends (Chromium does not hand Playwright the
#: body of a form with files), files as data URLs.
RECORD_FORMS = """
window.sentForms = [];
const originalFetch = window.fetch;
window.fetch = async (resource, options = {}) => {
  if (options.body instanceof FormData) {
    const fields = {};
    for (const [name, value] of options.body.entries()) {
      fields[name] = typeof value === "string" ? value : await new Promise((resolve) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.readAsDataURL(value);
      });
    }
    window.sentForms.push(fields);
  }
  return originalFetch(resource, options);
};
"""


def chromium_path() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: scripts/test-setup.sh "
                    "(the README's second command) installs it (apt-get install chromium), "
                    "or DIFFUSERVE_CHROMIUM names another binary")
    return found


def open_page(page: Page, server: LiveServer) -> None:
    """The playground of ``server``, once it has loaded its models."""
    page.goto(server.base_url + "/")
    page.wait_for_selector("body[data-ready=true]")


def wait_until(page: Page, script: str, timeout_ms: int = DRAW_TIMEOUT_MS) -> None:
    """Poll ``script`` until it is true (wait_for_function evaluates a string, which the
    page's policy forbids, rightly)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(script):
        assert time.monotonic() < deadline, f"not true within {timeout_ms} ms: {script}"
        page.wait_for_timeout(100)

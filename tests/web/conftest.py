"""Fixtures of the browser tests: Debian's chromium driven by Playwright, live servers on
the built-in model, and a folder for the screenshots of each state.

Nothing is downloaded: Playwright launches ``/usr/bin/chromium`` (``scripts/test-setup.sh``
installs it; without it these tests fail, as the Redis tests do without redis-server). The
screenshots go to ``$DIFFUSERVE_SCREENSHOTS`` when set, else to a temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.browser import KEY, chromium_path
from tests.support.live_server import LiveServer, start_server, wait_until_ready


# Per module, not per session: Playwright's sync API keeps an event loop running (on a
# greenlet) on the main thread while it is open, which would break every later test of
# the same process that runs a loop of its own (asyncio.run) when the suite is spread
# over workers (pytest -n) and a browser module runs first.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path())
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("DIFFUSERVE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """Both servers, started side by side (each loads the model for some seconds):

    ``open``: the README's first command (the built-in model, no keys, loopback only);
    ``keyed``: a key that may send one request a minute.
    """
    started = {
        "open": start_server([], tmp_path_factory.mktemp("open-server"), wait_ready=False),
        "keyed": start_server(["--rate-limit-rpm", "1"], tmp_path_factory.mktemp("keyed"),
                              env={"DIFFUSERVE_API_KEYS": KEY}, wait_ready=False),
    }
    try:
        for server in started.values():
            wait_until_ready(server, timeout=120.0)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture
def open_server(servers: dict[str, LiveServer]) -> LiveServer:
    return servers["open"]


@pytest.fixture
def keyed_server(servers: dict[str, LiveServer]) -> LiveServer:
    return servers["keyed"]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser profile (empty storage) at a desktop width, failing on any error
    the page raises or logs."""
    context = browser.new_context(viewport={"width": 1280, "height": 860},
                                  accept_downloads=True, reduced_motion="reduce")
    new_page = context.new_page()
    problems: list[str] = []
    new_page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    new_page.on("console", lambda message: problems.append(f"console: {message.text}")
                if message.type == "error" and "status of 4" not in message.text else None)
    yield new_page
    context.close()
    assert not problems, problems

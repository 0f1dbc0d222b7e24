"""Swagger UI at ``/docs`` in a real browser (headless Chromium) against a live server:
every operation rendered from this server's files alone, under the playground's
Content-Security-Policy, with no violation and no error."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.support.live_server import LiveServer

pytestmark = pytest.mark.e2e

#: Records what the policy blocks (Chromium also logs it as a console error, which the
#: page fixture fails on).
RECORD_VIOLATIONS = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""

OPERATIONS = {"/v1/images/generations", "/v1/images/edits", "/v1/images/variations",
              "/v1/models", "/v1/models/{model_id}", "/health", "/ready"}


def test_swagger_ui_renders_the_operations_from_this_origin_only(
    page: Page, open_server: LiveServer, screenshots: Path,
) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(open_server.base_url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = set(page.locator(".opblock-summary-path").evaluate_all(
        "nodes => nodes.map(node => node.getAttribute('data-path'))"))
    assert paths >= OPERATIONS, paths

    # The edit's two bodies, as Swagger UI offers them.
    page.click("#operations-default-edit_image_v1_images_edits_post .opblock-summary")
    media_types = page.locator(".opblock-body .body-param-content-type select option")
    media_types.first.wait_for(state="attached")
    assert set(media_types.all_inner_texts()) == {"multipart/form-data", "application/json"}
    page.screenshot(path=str(screenshots / "docs.png"), full_page=False)

    assert page.evaluate("window.violations") == []
    elsewhere = [url for url in requested
                 if not url.startswith((open_server.base_url + "/", "data:"))]
    assert elsewhere == []

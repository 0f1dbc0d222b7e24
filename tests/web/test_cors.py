"""A browser app on another origin calls the server with the official openai-node SDK
(``new OpenAI({dangerouslyAllowBrowser: true})``, the ES modules of
tests/e2e/node/node_modules served as they are): answered for an origin named by
``--cors-origins``, refused by the browser for any other.

Needs ``npm ci --prefix tests/e2e/node`` (as the Node SDK tests do) and Chromium, which
``scripts/test-setup.sh`` installs.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.support.live_server import LiveServer, start_server
from tests.support.node import NODE_SDK, require_node_sdk

KEY = "sk-browser-app-0123456789"
PAGE = """<!doctype html>
<title>a browser app</title>
<script type="module">
import OpenAI from "./openai/index.mjs";
window.generate = async (baseURL, apiKey, body) => {
  const client = new OpenAI({ baseURL, apiKey, dangerouslyAllowBrowser: true, maxRetries: 0 });
  try {
    const { data, response } = await client.images.generate(body).withResponse();
    return { count: data.data.length, requestId: response.headers.get("x-request-id"),
             remaining: response.headers.get("x-ratelimit-remaining-requests") };
  } catch (error) {
    return { error: error.constructor.name, status: error.status ?? null,
             message: String(error.message) };
  }
};
window.ready = true;
</script>
"""
GENERATION = {"model": "dall-e-2", "prompt": "a cat", "size": "256x256",
              "response_format": "b64_json"}


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript"}

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The app's origin: its page and the SDK's modules, from a loopback port."""
    require_node_sdk()
    root = tmp_path_factory.mktemp("browser-app")
    (root / "index.html").write_text(PAGE)
    (root / "openai").symlink_to(NODE_SDK, target_is_directory=True)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def api(tiny_models: dict[str, Path], page_port: int,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("cors-api")
    models = tmp / "models.toml"
    models.write_text(f'[[models]]\nname = "tiny"\nsource = "{tiny_models["sd"]}"\n'
                      "steps = 2\n")
    live = start_server(["--models-file", str(models), "--api-key", KEY,
                         "--rate-limit-rpm", "10",
                         "--cors-origins", f"http://127.0.0.1:{page_port}"], tmp)
    yield live
    live.stop()


def from_page(browser: Browser, origin: str, api: LiveServer,
              body: dict[str, Any]) -> dict[str, Any]:
    page = browser.new_page()
    try:
        page.goto(f"{origin}/index.html")
        page.wait_for_function("window.ready === true")
        result: dict[str, Any] = page.evaluate(
            "([url, key, body]) => window.generate(url, key, body)",
            [f"{api.base_url}/v1", KEY, body])
        return result
    finally:
        page.close()


def test_an_app_of_a_configured_origin_reads_images_ids_and_limits(
    browser: Browser, api: LiveServer, page_port: int
) -> None:
    result = from_page(browser, f"http://127.0.0.1:{page_port}", api, GENERATION)

    assert result["count"] == 1, result
    assert result["requestId"].startswith("req_")
    assert result["remaining"] is not None and int(result["remaining"]) < 10


def test_it_reads_a_refusal_as_the_sdks_error(browser: Browser, api: LiveServer,
                                              page_port: int) -> None:
    result = from_page(browser, f"http://127.0.0.1:{page_port}", api,
                       {**GENERATION, "model": "dall-e-3", "size": "512x512"})

    assert (result["error"], result["status"]) == ("BadRequestError", 400)
    assert "Supported sizes for dall-e-3" in result["message"]


def test_an_app_of_another_origin_is_refused_by_the_browser(
    browser: Browser, api: LiveServer, page_port: int
) -> None:
    # localhost and 127.0.0.1 are two origins: this one is not configured.
    result = from_page(browser, f"http://localhost:{page_port}", api, GENERATION)

    assert (result["error"], result["status"]) == ("APIConnectionError", None)

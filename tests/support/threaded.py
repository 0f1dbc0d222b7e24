"""An application served by diffuserve's own HTTP server (uvicorn with its limits) on a
loopback port, in a thread of the test process: a live server whose code a test may
still patch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from diffuserve.api.server import HttpLimits, build_server


@contextmanager
def serving_in_thread(app: Any, limits: HttpLimits | None = None) -> Iterator[str]:
    """``app`` served until the block ends; yields its base URL."""
    server = build_server(app, host="127.0.0.1", port=0, limits=limits or HttpLimits(),
                          shutdown_timeout=5.0, on_stop_signal=None)
    # Off the main thread uvicorn installs no signal handlers.
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "the server did not stop"

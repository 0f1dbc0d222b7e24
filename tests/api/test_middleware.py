"""A bug's answer on the live HTTP server: a 500 in OpenAI's envelope with the request's
id, one traceback in the log, and the keep-alive connection still usable."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from diffuserve.api.errors import install_error_handlers
from diffuserve.api.middleware import RequestContextMiddleware
from tests.support.threaded import serving_in_thread

REQUEST_ID = re.compile(rb"x-request-id: (req_[0-9a-f]{32})", re.I)


def buggy_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=1 << 20)

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    @app.get("/fine")
    async def fine() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving_in_thread(buggy_app()) as url:
        yield url


def exchange(sock: socket.socket, path: str) -> bytes:
    """One request on ``sock`` and its whole answer (a Content-Length body)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_bug_is_a_500_envelope_with_the_request_id_and_the_connection_goes_on(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    with caplog.at_level(logging.ERROR), \
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        failed = exchange(sock, "/bug")
        # The same connection carries the next request.
        after = exchange(sock, "/fine")

    head, _, body = failed.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500")
    assert b"connection: close" not in head.lower()
    assert body.startswith(b'{"error": {"message": "The server had an error')
    request_id = REQUEST_ID.search(head)
    assert request_id is not None
    assert after.startswith(b"HTTP/1.1 200") and after.endswith(b'{"status":"ok"}')
    # One traceback, logged with the request's id; the HTTP server logged none.
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1
    assert tracebacks[0].fields["request_id"] == request_id.group(1).decode()  # type: ignore[attr-defined]

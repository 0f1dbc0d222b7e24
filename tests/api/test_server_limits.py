"""What a hostile or broken client can make the HTTP server hold, seen from the client.

Each server here runs in-process on a free loopback port, in a thread, with a tiny app;
clients are raw sockets (to send what no HTTP library would) and httpx.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from diffuserve.api.server import HttpLimits, build_server

# Short clocks, so that the tests that wait for them stay quick.
TEST_LIMITS = HttpLimits(header_timeout=1.0, keep_alive_timeout=1)
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


@dataclass
class Running:
    server: uvicorn.Server
    port: int
    slow_request_started: threading.Event
    stop_signals: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def _tiny_app(slow_request_started: threading.Event) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        slow_request_started.set()
        await asyncio.sleep(30)
        return {"status": "finally"}

    return app


@contextmanager
def serving(limits: HttpLimits, shutdown_timeout: float = 5.0) -> Iterator[Running]:
    started = threading.Event()
    stop_signals: list[str] = []
    server = build_server(
        _tiny_app(started), host="127.0.0.1", port=0, limits=limits,
        shutdown_timeout=shutdown_timeout,
        on_stop_signal=lambda: stop_signals.append("stop"),
    )
    # Off the main thread uvicorn installs no signal handlers.
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Running(server, port, started, stop_signals)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with serving(TEST_LIMITS) as running:
        yield running


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, object]:
        envelope = json.loads(self.body)
        assert set(envelope) == {"error"}
        error: dict[str, object] = envelope["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return error


def read_response(sock: socket.socket, buffered: bytearray | None = None) -> RawResponse:
    """One HTTP/1.1 response with a content-length; what follows stays in ``buffered``."""
    data = buffered if buffered is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-response: {bytes(data)!r}"
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-body"
        body += chunk
    data[:] = body[length:]
    return RawResponse(int(status_line.split()[1]), headers, bytes(body[:length]))


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (sending nothing more) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def assert_refusal(response: RawResponse, status: int, code: str) -> None:
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    assert REQUEST_ID.fullmatch(response.headers["x-request-id"])
    error = response.error()
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["param"] is None
    assert isinstance(error["message"], str) and error["message"]


def vm_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# Ordinary requests


def test_ordinary_requests_are_served_as_before(server: Running) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        health = client.get("/health")
        echoed = client.post("/echo", content=b"hello")
        near_the_limit = client.get("/health", headers={"x-padding": "p" * 12_000})
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert echoed.status_code == 200 and echoed.content == b"hello"
    assert near_the_limit.status_code == 200


def test_headers_sent_in_one_write_with_a_large_body_are_not_taken_for_oversized(
    server: Running,
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    request = (b"POST /echo HTTP/1.1\r\nHost: test\r\ncontent-type: application/octet-stream"
               b"\r\ncontent-length: %d\r\n\r\n" % len(body)) + body
    with server.connect() as sock:
        sock.sendall(request)
        response = read_response(sock)
    assert response.status == 200
    assert response.body == body


def test_pipelined_requests_in_one_write_are_all_answered(server: Running) -> None:
    one = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    with server.connect() as sock:
        sock.sendall(one * 20)
        leftover = bytearray()
        statuses = [read_response(sock, leftover).status for _ in range(20)]
    assert statuses == [200] * 20


# Oversized and too many headers


def test_an_oversized_header_is_refused_with_431_long_before_it_is_all_sent(
    server: Running,
) -> None:
    chunk = b"a" * 65536
    total = 8 * 1024 * 1024
    sent = 0
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ")
        # Sent at a pace that lets the server's answer be seen as soon as it comes.
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        response = read_response(sock)
        assert_refusal(response, 431, "request_header_fields_too_large")
        assert closed_within(sock, 5)
    assert sent < total // 8, f"the server let {sent} header bytes through"


def test_oversized_headers_from_several_clients_at_once_do_not_grow_memory(
    server: Running,
) -> None:
    payload = b"GET /health HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer " + b"a" * (
        8 * 1024 * 1024
    )
    before = vm_rss_bytes()
    with ExitStack() as stack:
        # Each client sends its 8 MiB header blindly and stays connected until the
        # memory is read: a server that buffered the headers would still hold them.
        for _ in range(8):
            sock = stack.enter_context(server.connect())
            with suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)
        grown = vm_rss_bytes() - before
    assert grown < 16 * 1024 * 1024, f"memory grew by {grown} bytes for 64 MiB of headers"


@pytest.mark.parametrize(("count", "status"), [(100, 200), (101, 431)])
def test_the_header_count_limit_is_exact(server: Running, count: int, status: int) -> None:
    # Host is one of them; the last one is the one that may break the limit.
    headers = b"".join(b"x-h-%d: v\r\n" % i for i in range(count - 1))
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
        assert read_response(sock).status == status


def test_too_many_headers_are_refused_with_431(server: Running) -> None:
    headers = b"".join(b"x-h-%d: v\r\n" % i for i in range(150))
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
        response = read_response(sock)
        assert_refusal(response, 431, "request_header_fields_too_large")
        assert closed_within(sock, 5)


def test_a_malformed_request_gets_400_in_the_envelope(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost test\r\n\r\n")
        response = read_response(sock)
    assert_refusal(response, 400, "invalid_http_request")


# Slow and idle clients


def test_a_slowloris_client_gets_408_and_is_disconnected(server: Running) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        sent = 0
        for _ in range(50):  # at most 10 s
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                break
            try:
                sock.sendall(b"s")
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                break
        response = read_response(sock)
        assert_refusal(response, 408, "request_timeout")
        assert closed_within(sock, 5)
        # The limit is 1 s (about 5 bytes at this pace): cut off long before the client
        # ran out of bytes to trickle, counted in bytes rather than seconds.
        assert sent < 45


def test_a_connection_that_never_sends_anything_is_closed(server: Running) -> None:
    with server.connect() as sock:
        assert closed_within(sock, 5)


def test_health_answers_while_50_slow_clients_hold_connections(server: Running) -> None:
    with ExitStack() as stack:
        for _ in range(50):
            sock = stack.enter_context(server.connect())
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: s")
        response = httpx.get(f"{server.url}/health", timeout=5)
    assert response.status_code == 200


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(server: Running) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    with server.connect() as sock:
        sock.sendall(request)
        assert read_response(sock).status == 200
        sock.sendall(request)  # the connection is kept alive between requests...
        assert read_response(sock).status == 200
        assert closed_within(sock, 5)  # ...but not for ever


# Connection limit and shutdown


def test_past_max_connections_requests_get_503_in_the_envelope() -> None:
    with serving(HttpLimits(max_connections=2, header_timeout=10)) as running, ExitStack() as held:
        for _ in range(2):
            held.enter_context(running.connect())
        response = httpx.get(f"{running.url}/health", timeout=5)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/json"
        assert REQUEST_ID.fullmatch(response.headers["x-request-id"])
        assert response.json() == {"error": {
            "message": response.json()["error"]["message"], "type": "server_error",
            "param": None, "code": None,
        }}

        held.close()
        # The server notices the closed connections on its own time.
        for _ in range(50):
            if httpx.get(f"{running.url}/health", timeout=5).status_code == 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail("requests were still refused after the connections closed")


def test_a_request_still_running_at_the_shutdown_deadline_gets_a_503_envelope() -> None:
    with serving(TEST_LIMITS, shutdown_timeout=1) as running, running.connect() as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        assert running.slow_request_started.wait(10)
        # What SIGTERM does (uvicorn's handler, called here from outside its loop).
        running.server.handle_exit(signal.SIGTERM, None)
        response = read_response(sock)
        assert running.stop_signals == ["stop"]
        assert response.status == 503
        assert response.headers["retry-after"] == "1"
        assert response.error()["type"] == "server_error"

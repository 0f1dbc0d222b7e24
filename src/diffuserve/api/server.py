"""The HTTP server the CLI runs: uvicorn, bounded in what one client can make it hold.

uvicorn (with httptools) reads a request's headers without any size, count or time
limit, and keeps a connection that never sends anything open for ever. ``build_server``
sets uvicorn's own limits where it has them and, where it has none, uses a small
subclass of its httptools protocol:

* request line + headers larger than ``max_header_bytes``, or more than
  ``max_headers`` header fields → 431, counted as the bytes arrive, so nothing past
  the limit is buffered;
* headers not complete ``header_timeout`` seconds after the connection opened (or
  after the first byte of a later request on it) → 408; a connection that never sent
  a byte is just closed;
* more than ``max_connections`` open connections (or running requests) → 503 with
  ``Retry-After``, as uvicorn's ``limit_concurrency`` does, but in OpenAI's envelope;
* a request still running when the graceful-shutdown timeout cancels it → 503 in the
  envelope, instead of uvicorn's bare text/plain 500.

The protocol subclass leans on internals of ``HttpToolsProtocol`` (the parser
callbacks, ``cycle``, ``_start_asgi_task``); ``tests/api/test_server_limits.py`` pins
the behaviour down against the installed uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn._types import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    Scope,
)
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

logger = logging.getLogger("diffuserve.server")

# After answering 431/408 the server stops sending but keeps reading (and discarding)
# for at most this long before closing: closing a socket with unread input makes the
# kernel send a reset, which can destroy the answer before the client has read it.
_LINGER_SECONDS = 1.0
# File descriptors the process needs besides connections: model weights, the image
# store, logs, the event loop's own.
_FD_HEADROOM = 256


@dataclass(frozen=True)
class HttpLimits:
    """What one client may make the HTTP server hold, and for how long.

    The defaults: ``max_header_bytes`` 16 KiB is h11's and Node's default and 10x what
    the OpenAI SDKs send (a bearer key and a dozen short headers, under 1.5 KiB);
    ``max_headers`` 100 is Apache's ``LimitRequestFields``; ``header_timeout`` 10 s
    lets even a 2 kB/s link send 16 KiB of headers yet frees a slowloris socket in
    seconds (nginx and Node allow 60 s, which a server holding a GPU need not copy);
    ``keep_alive_timeout`` 5 s is uvicorn's default and matches httpx's pool expiry,
    the client the OpenAI Python SDK uses; ``max_connections`` 1024 keeps the worst
    case of headers held in memory at 16 MiB and fits the file-descriptor limit
    ``build_server`` raises the process to.
    """

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keep_alive_timeout: int = 5
    max_connections: int = 1024

    def __post_init__(self) -> None:
        # The request line alone needs a few dozen bytes; below that nothing is served.
        if self.max_header_bytes < 256:
            raise ValueError("max_header_bytes must be at least 256")
        if self.max_headers < 1:
            raise ValueError("max_headers must be at least 1")
        if not (0 < self.header_timeout < math.inf):
            raise ValueError("header_timeout must be a positive number of seconds")
        if self.keep_alive_timeout < 1:
            raise ValueError("keep_alive_timeout must be at least 1 second")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


class _TooManyHeaders(Exception):
    """Raised from the parser callback to stop parsing; httptools wraps it."""


def _request_id() -> bytes:
    # The same shape as the ids the app's middleware gives every other response.
    return f"req_{uuid.uuid4().hex}".encode()


def _envelope(message: str, error_type: str, code: str | None) -> bytes:
    error = {"message": message, "type": error_type, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


_OVERLOADED_BODY = _envelope(
    "The server has too many open connections; retry shortly.", "server_error", None
)
_SHUTTING_DOWN_BODY = _envelope(
    "The server shut down before this request finished; retry it.", "server_error", None
)


async def _send_unavailable(send: ASGISendCallable, body: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
            (b"x-request-id", _request_id()),
        ],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _overloaded(
    scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """Stands in for the app when the connection limit is reached."""
    await _send_unavailable(send, _OVERLOADED_BODY)


def _answer_if_cancelled(app: ASGI3Application, cycle: RequestResponseCycle) -> ASGI3Application:
    """``app``, but a request cancelled before it answered gets a 503 envelope.

    uvicorn cancels the requests still running when ``timeout_graceful_shutdown``
    passes; its ``RequestResponseCycle.run_asgi`` then answers a bare text/plain 500,
    which tells a client its request failed rather than that it may retry.
    """

    async def guarded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        try:
            await app(scope, receive, send)
        except asyncio.CancelledError:
            if cycle.response_started or cycle.disconnected:
                raise
            # The task is being discarded: answering is all that is left to do with it.
            await _send_unavailable(send, _SHUTTING_DOWN_BODY)

    return guarded


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on request headers and connections.

    ``build_server`` makes a subclass with ``limits`` set, one per server.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's own check answers text/plain and counts this connection against the
        # limit (so it serves one fewer than asked): on_headers_complete does it instead.
        self.limit_concurrency = None
        self._max_connections = self.limits.max_connections
        self._max_header_bytes = self.limits.max_header_bytes
        self._max_headers = self.limits.max_headers
        # Request line + header bytes the current request may still send.
        self._header_budget = self._max_header_bytes
        self._header_count = 0
        self._reading_headers = True
        self._header_timer: TimerHandle | None = None
        self._discard_input = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms no timer until a first response: a silent connection stayed open.
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discard_input:
            return
        while self._reading_headers and len(data) > self._header_budget:
            # This read may end the headers and go on into a body or a pipelined
            # request: feed only what the budget allows, then look again.
            head, data = data[: self._header_budget], data[self._header_budget :]
            self._header_budget = 0
            if head:
                self._feed(head)
            if self._discard_input or self.transport.is_closing():
                return
            if self._reading_headers and self._header_budget == 0:
                self._reject(431, "request_header_fields_too_large",
                             "Request line and headers exceed "
                             f"{self._max_header_bytes} bytes.")
                return
        if self._reading_headers:
            self._header_budget -= len(data)
        self._feed(data)
        # Headers left incomplete (or bytes of a next request sent): start their clock.
        if (self._reading_headers and self._header_timer is None
                and self._header_budget < self._max_header_bytes
                and not self._discard_input and not self.transport.is_closing()):
            self._arm_header_timer()

    def _feed(self, data: bytes) -> None:
        # HttpToolsProtocol.data_received, but a parse stopped by a limit is told apart
        # from a malformed request.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _TooManyHeaders):
                self._reject(431, "request_header_fields_too_large",
                             f"The request has more than {self._max_headers} headers.")
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # Parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._max_headers:
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._cancel_header_timer()
        # This connection is one of self.connections; this request is not yet a task.
        if (len(self.connections) > self._max_connections
                or len(self.tasks) >= self._max_connections):
            self.logger.warning("Exceeded concurrency limit.")
            app = self.app
            self.app = _overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_headers = True
        self._header_budget = self._max_header_bytes
        self._header_count = 0

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        super()._start_asgi_task(cycle, _answer_if_cancelled(app, cycle))

    # Answers the app never sees

    def send_400_response(self, msg: str) -> None:
        self._send_error(400, "invalid_http_request", msg)
        self.transport.close()

    def _reject(self, status: int, code: str, message: str) -> None:
        self._cancel_header_timer()
        self._discard_input = True
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request broke a limit while the one before it is still being
            # answered: let that answer finish, then close.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        logger.info("refused a request: %s", message,
                    extra={"fields": {"status": status, "client": self.client}})
        self._send_error(status, code, message)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._header_timer = self.loop.call_later(_LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _send_error(self, status: int, code: str, message: str) -> None:
        body = _envelope(message, "invalid_request_error", code)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([
            b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"connection: close\r\n",
            b"x-request-id: ", _request_id(), b"\r\n",
            b"\r\n",
            body,
        ])
        self.transport.write(b"".join(content))

    # The header clock

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout, self._header_timer_expired
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timer_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._header_budget == self._max_header_bytes:
            # Not a byte since the connection opened: there is no request to answer.
            self.transport.close()
            return
        self._reject(408, "request_timeout",
                     f"The request headers took longer than {self.limits.header_timeout:g} "
                     "seconds to arrive.")


class LimitedServer(uvicorn.Server):
    """A uvicorn server that tells the app a stop signal came before shutting down.

    ``on_stop_signal`` runs on every SIGTERM/SIGINT (the CLI starts draining there:
    queued requests get 503 at once, running ones finish), then uvicorn's graceful exit.
    """

    def __init__(self, config: Config, on_stop_signal: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_stop_signal = on_stop_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._on_stop_signal is not None:
            self._on_stop_signal()
        super().handle_exit(sig, frame)


def _ensure_fd_headroom(max_connections: int) -> None:
    """Raise the soft open-file limit so that ``max_connections`` sockets fit.

    Many systems start processes at a soft limit of 1024 under a far higher hard one;
    running out means failed accepts and failed file opens for everyone, not a 503.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    needed = max_connections + _FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        logger.warning(
            "the open-file limit (%d) is below max_connections + %d; lower max_connections "
            "or raise the limit (ulimit -n)", target, _FD_HEADROOM,
        )


def build_server(
    app: ASGI3Application | Callable[..., Any],
    *,
    host: str,
    port: int,
    limits: HttpLimits,
    shutdown_timeout: float,
    on_stop_signal: Callable[[], None] | None,
    log_config: dict[str, Any] | None = None,
) -> uvicorn.Server:
    """The server for ``app``, enforcing ``limits``; call ``.run()`` on it.

    Raises the process's soft open-file limit to fit ``limits.max_connections``.
    """
    _ensure_fd_headroom(limits.max_connections)
    bound = limits

    class BoundLimitedHttpToolsProtocol(LimitedHttpToolsProtocol):
        limits = bound

    config = Config(
        app,
        host=host,
        port=port,
        http=BoundLimitedHttpToolsProtocol,
        # The API has no WebSocket routes: don't accept upgrades (nor their 16 MiB frames).
        ws="none",
        proxy_headers=False,
        log_config=log_config,
        access_log=False,
        timeout_keep_alive=limits.keep_alive_timeout,
        # Also enforced by the protocol; set here so that uvicorn's log and any other
        # protocol class agree.
        limit_concurrency=limits.max_connections,
        # Only h11 reads this (httptools has no such limit; the protocol above is it),
        # should the server ever be run with http="h11".
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_graceful_shutdown=math.ceil(shutdown_timeout),
    )
    return LimitedServer(config, on_stop_signal)

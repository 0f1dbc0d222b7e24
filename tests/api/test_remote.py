"""Remote image URLs of JSON edits (``--allow-remote-image-urls``): fetched only for a
valid, admitted request, no more than the images it may send, within one deadline, from
the address that was checked, and never once its client has left."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from diffuserve.api import remote
from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from diffuserve.engine.types import TaskKind
from diffuserve.protocol.errors import InvalidRequestError
from tests.support.clients import AUTH, KEY, make_client
from tests.support.fakes import FakeBackend
from tests.support.threaded import serving_in_thread


class EditingBackend(FakeBackend):
    """A fake that takes edits and variations too."""

    tasks = frozenset(TaskKind)


class Origin:
    """A loopback HTTP origin: counts connections, records Host headers, and answers
    with a PNG, or trickles a byte at a time, or never answers."""

    def __init__(self, mode: str = "png") -> None:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
        self.body = buffer.getvalue()
        self.mode = mode
        self.connections = 0
        self.hosts: list[str] = []
        self.closed_by_peer = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            request = b""
            while b"\r\n\r\n" not in request and not self._stop.is_set():
                try:
                    request += conn.recv(4096)
                except TimeoutError:
                    continue
            for line in request.split(b"\r\n"):
                if line.lower().startswith(b"host:"):
                    self.hosts.append(line.split(b":", 1)[1].strip().decode())
            if self.mode == "png":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(self.body) + self.body)
                return
            if self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            # "trickle": a byte now and then; "hang": nothing. Until the peer leaves.
            while not self._stop.is_set():
                try:
                    if self.mode == "trickle":
                        conn.sendall(b"x")
                    if conn.recv(1) == b"":
                        self.closed_by_peer.set()
                        return
                except TimeoutError:
                    continue
                except OSError:
                    self.closed_by_peer.set()
                    return

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.sock.close()


@contextmanager
def origin(mode: str = "png") -> Iterator[Origin]:
    server = Origin(mode)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's origins are on loopback: treat it as public, as a real host would be."""
    monkeypatch.setattr(remote, "is_public", lambda address: True)


def edit(url: str, count: int = 1, **body: Any) -> dict[str, Any]:
    return {"model": "gpt-image-1", "prompt": "bluer",
            "images": [{"image_url": url}] * count, **body}


@pytest.mark.parametrize("address", [
    "10.0.0.1", "127.0.0.1", "169.254.169.254", "::1", "fe80::1", "fd00::1",
    "::ffff:10.0.0.1",           # IPv4-mapped
    "::10.0.0.1",                # IPv4-compatible
    "64:ff9b::a00:1",            # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",        # NAT64 of the metadata address
    "2002:a00:1::1",             # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo of 10.0.0.1
])
def test_every_non_public_range_is_refused(address: str) -> None:
    assert not remote.is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111",
                                     "64:ff9b::808:808", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert remote.is_public(address)


@pytest.mark.parametrize(("body", "code"), [
    ({"model": "gpt-image-1"}, "too_many_images"),          # 200 URLs; it takes 16
    ({"model": "dall-e-2", "count": 2}, "too_many_images"),  # it takes 1
    ({"prompt": None, "count": 1}, "missing_required_parameter"),
    ({"n": 99, "count": 1}, None),  # OpenAI's n error has no code
])
def test_an_invalid_request_fetches_nothing(tmp_path: Path, loopback_is_public: None,
                                            body: dict[str, Any], code: str | None) -> None:
    count = body.pop("count", 200)
    with origin() as server, make_client(tmp_path, EditingBackend(), auto_aliases=True,
                                         aliases=(), allow_remote_image_urls=True) as client:
        payload = edit(f"http://127.0.0.1:{server.port}/a.png", count, **body)
        if payload["prompt"] is None:
            del payload["prompt"]
        response = client.post("/v1/images/edits", headers=AUTH, json=payload)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == code
        assert server.connections == 0


def test_a_request_refused_by_its_rate_limit_fetches_nothing(
    tmp_path: Path, loopback_is_public: None
) -> None:
    with origin() as server, make_client(tmp_path, EditingBackend(), auto_aliases=True,
                                         aliases=(), allow_remote_image_urls=True,
                                         rate_limit_ipm=1) as client:
        url = f"http://127.0.0.1:{server.port}/a.png"
        first = client.post("/v1/images/edits", headers=AUTH, json=edit(url))
        assert first.status_code == 200, first.text
        assert server.connections == 1
        refused = client.post("/v1/images/edits", headers=AUTH, json=edit(url))
        assert refused.status_code == 429
        assert server.connections == 1


def test_one_deadline_covers_the_whole_fetch(loopback_is_public: None) -> None:
    # Each byte comes well within any per-read timeout; the fetch as a whole does not.
    with origin("trickle") as server:
        with pytest.raises(InvalidRequestError) as caught:
            asyncio.run(remote.fetch_image_url(f"http://127.0.0.1:{server.port}/a.png",
                                               "images[0]", max_bytes=1 << 20,
                                               deadline_seconds=1.0))
        assert server.closed_by_peer.wait(30)
    assert (caught.value.param, caught.value.code) == ("images[0]", "invalid_image_url")
    assert "within 1 seconds" in caught.value.message


def test_the_connection_goes_to_the_address_that_was_checked(
    loopback_is_public: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name that resolves to a checked address once, then to somewhere else: the
    # fetch must not ask again (DNS rebinding).
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            lookups.append(host)
            if len(lookups) > 1:
                raise socket.gaierror("resolves elsewhere now")
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with origin() as server:
        port = server.port
        upload = asyncio.run(remote.fetch_image_url(
            f"http://rebind.test:{port}/red.png", "images[0]", max_bytes=1 << 20))
    assert upload.data == server.body and upload.filename == "red.png"
    assert lookups == ["rebind.test"]
    assert server.hosts == [f"rebind.test:{port}"]  # the name, for Host (and TLS)


def test_a_fetch_stops_when_its_client_leaves(tmp_path: Path, loopback_is_public: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The deadline is far away: only the client's leaving can end the fetch early.
    monkeypatch.setattr(remote, "FETCH_DEADLINE_SECONDS", 600.0)
    settings = Settings(storage_dir=tmp_path / "images", api_keys=(KEY,),
                        models=(ModelSpec(name="fake", source="fake"),),
                        auto_aliases=True, allow_remote_image_urls=True)
    app = build_app(settings, backends={"fake": EditingBackend()})
    with origin("hang") as server, serving_in_thread(app) as base_url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base_url}/v1/images/edits", json=edit(
                f"http://127.0.0.1:{server.port}/a.png"),
                headers=AUTH, timeout=1.0)
        assert server.connections == 1
        # Within a minute, against a deadline of ten: the client's leaving ended it.
        assert server.closed_by_peer.wait(60), "the fetch went on after its client left"

"""Shared fixtures: tiny real pipelines on disk, fake backends, live server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image

from diffuserve.engine.backends.base import Backend
from diffuserve.engine.types import GenerationParams, StepCallback
from tests.support.processes import stop_process
from tests.tiny_pipelines import build_tiny_sd, build_tiny_sdxl

if TYPE_CHECKING:
    from tests.support.s3 import MotoS3, S3Bucket

# Tests never reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised SD 1.x and SDXL pipelines saved with ``save_pretrained``."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "sd": build_tiny_sd(root / "tiny-sd"),
        "sdxl": build_tiny_sdxl(root / "tiny-sdxl"),
    }


class FakeBackend(Backend):
    """Draws a flat colour derived from the seed and prompt; records every call.

    ``delay`` makes a call take time; ``error`` makes it raise.
    """

    def __init__(self, device: str = "fake", delay: float = 0.0,
                 error: BaseException | None = None, loaded: bool = True) -> None:
        self.device = device
        self.delay = delay
        self.error = error
        self._loaded = loaded
        self.calls: list[GenerationParams] = []

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        self._loaded = True

    def generate(
        self, params: GenerationParams, on_step: StepCallback | None = None
    ) -> list[Image.Image]:
        self.calls.append(params)
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return [
            Image.new("RGB", (params.width, params.height),
                      ((seed * 37) % 256, (seed * 91) % 256, len(params.prompt) % 256))
            for seed in params.seeds
        ]


class SlowLoadingBackend(FakeBackend):
    """A fake whose ``load`` waits until ``release`` is set (or 10 s pass)."""

    def __init__(self) -> None:
        super().__init__(loaded=False)
        self.release = threading.Event()

    def load(self) -> None:
        self.release.wait(10)
        super().load()


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A ``diffuserve serve`` process on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    storage_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        stop_process(self.process, timeout=20)
        return self.process.returncode


def start_server(args: list[str], tmp: Path, env: dict[str, str] | None = None,
                 storage_dir: Path | None = None, wait_ready: bool = True,
                 timeout: float = 90.0, command: list[str] | None = None) -> LiveServer:
    """``diffuserve serve ARGS`` (or ``COMMAND serve ARGS``) on a free loopback port."""
    port = free_port()
    storage = storage_dir or tmp / "storage"
    log_path = tmp / f"server-{port}.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [*(command or [sys.executable, "-m", "diffuserve"]), "serve", "--port", str(port),
           "--storage-dir", str(storage), *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = LiveServer(process, port, log_path, storage, full_env)
    if wait_ready:
        try:
            wait_until_ready(server, timeout)
        except RuntimeError:
            server.stop()
            raise
    return server


def wait_until_ready(server: LiveServer, timeout: float = 90.0) -> None:
    """Until ``/ready`` answers 200; raises with the server's log if it exits or is not
    ready in ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n"
                               f"{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready in {timeout}s:\n{server.log()}")
        time.sleep(0.2)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers for one test; all are stopped afterwards."""
    started: list[LiveServer] = []

    def factory(args: list[str], **kwargs: object) -> LiveServer:
        server = start_server(args, tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """moto's S3 server on a loopback port, for the whole session (imported only then)."""
    from tests.support.s3 import running_moto_s3

    with running_moto_s3() as server:
        yield server


@pytest.fixture
def s3_bucket(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket; this test's AWS_* environment points at it, with fake credentials."""
    from tests.support.s3 import FOREIGN_AWS_VARIABLES

    for name in FOREIGN_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    bucket = moto_s3.new_bucket()
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    return bucket

"""Shared fixtures: tiny real pipelines on disk, fake backends, live server processes.

Their helpers live in tests/support (whose import keeps the tests off the Hugging Face Hub).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.fakes import FakeBackend
from tests.support.live_server import LiveServer, start_server
from tests.support.tiny_pipelines import build_tiny_sd, build_tiny_sdxl

if TYPE_CHECKING:
    from tests.support.s3 import MotoS3, S3Bucket


def pytest_configure(config: pytest.Config) -> None:
    """PyTorch's OpenMP threads sleep while they wait for work instead of spinning, in
    this process and in every process it starts (pytest-xdist's workers, the servers,
    the Ray cluster: each inherits the environment, and each reads it when PyTorch is
    first imported, which is later than this). With two workers on two cores, spinning
    threads of one process took the cores the other's busy threads needed: a tiny
    pipeline's batch beside another worker took 20-35 s of wall clock instead of 3, and
    the compile and hotswap tests on both workers 305 s instead of 108. A value already
    in the environment is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised SD 1.x and SDXL pipelines saved with ``save_pretrained``."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "sd": build_tiny_sd(root / "tiny-sd"),
        "sdxl": build_tiny_sdxl(root / "tiny-sdxl"),
    }


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


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

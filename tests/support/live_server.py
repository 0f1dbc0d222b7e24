"""``diffuserve serve`` processes on free loopback ports, for the tests and benchmarks/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.processes import stop_process


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

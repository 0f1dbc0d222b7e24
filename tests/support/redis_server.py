"""A real ``redis-server`` on a loopback port, for the tests of shared rate limits.

Debian's ``redis-server`` binary is what ``scripts/test-setup.sh`` installs; a machine
without it fails these tests with a message that says so, rather than skipping them and
passing untested.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.processes import stop_process

MISSING_BINARY = (
    "redis-server is not on PATH: the tests of shared rate limits need the real server; "
    "scripts/test-setup.sh (the README's second command) installs it "
    "(Debian/Ubuntu: apt-get install redis-server)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process: no persistence, its own directory, a free port.

    ``stop()`` and ``start()`` again bring it back on the same port, empty, as a Redis
    that restarted without persistence would be. ``pause()`` makes it hang (connections
    are accepted, nothing is answered) and ``resume()`` brings it back with its data.
    """

    def __init__(self, directory: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(MISSING_BINARY)
        self.binary = binary
        self.directory = directory
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if self.password:
            args += ["--requirepass", self.password]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n"
                                   + (self.directory / "redis.log").read_text(errors="replace"))
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        # No retries: redis-py's default backoff would turn each refused PING of the
        # start-up wait into seconds.
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=2, socket_connect_timeout=2,
                           retry=Retry(NoBackoff(), 0))

    def _answers_ping(self) -> bool:
        with self.client() as client:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

    def pause(self) -> None:
        """SIGSTOP: a hung Redis, not a gone one (the kernel still accepts connections)."""
        assert self.process is not None, "redis-server is not running"
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None, "redis-server is not running"
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()  # a stopped process would not act on SIGTERM
        stop_process(self.process, timeout=10)
        self.process = None

    def flush(self) -> None:
        """Empty every database, so each test starts from no counted use."""
        with self.client() as client:
            client.flushall()

"""A one-machine Ray cluster on the loopback interface, for the Ray tests and benchmark.

``ray start --head --block`` in its own session: stopping it takes the cluster down.
The model replicas are found by their process titles, to kill one or read its CPU time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The environment of the cluster and of its clients (``diffuserve serve --ray``).
RAY_ENV = {
    # Ray's own switch for a one-machine cluster on the loopback interface.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Token authentication, which clients of an existing cluster must ask for, with this
    # run's own token: `ray start` never makes one (it reads ~/.ray/auth_token or this).
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": uuid.uuid4().hex,
    "RAY_USAGE_STATS_ENABLED": "0",
    # Applications are deleted before the cluster stops: nothing is left to drain.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
}
#: Process titles of the replicas of ``diffuserve serve --ray``: this, then the name of
#: their deployment (``model-<name>`` for a model's).
REPLICA = "ServeReplica:diffuserve:"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def ray_head(tmp: Path, env: dict[str, str] | None = None,
             num_cpus: int = 2) -> Iterator[str]:
    """A running head node; yields its address (for ``RAY_ADDRESS``). ``env`` reaches
    every replica (S3 credentials, for instance)."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    port = free_port()
    full_env = {**os.environ, **(env or {}), **RAY_ENV, "HF_HUB_OFFLINE": "1"}
    # Ray's sockets live under its temp dir, and a socket's path may not pass 107 bytes:
    # pytest's folders (deeper still under pytest -n) are too long, so the cluster's
    # files are in a short folder of their own, reached from ``tmp / "ray"`` too.
    short = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    (tmp / "ray").symlink_to(short, target_is_directory=True)
    with (tmp / "ray-head.log").open("wb") as log:
        head = subprocess.Popen(
            [ray_bin, "start", "--head", "--block", "--num-cpus", str(num_cpus),
             "--port", str(port), "--include-dashboard", "false", "--disable-usage-stats",
             "--temp-dir", str(short)],
            stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(short, ignore_errors=True)


def model_replica_cpu(deployment: str = "model-") -> dict[int, float]:
    """The model replicas' processes of this run's cluster (of one model, given its
    ``deployment``'s name) and the CPU seconds each has used: those whose environment
    holds this run's token, not the replicas of another run on the same machine, or of
    one whose cluster is still going down."""
    found: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    token = f"RAY_AUTH_TOKEN={RAY_ENV['RAY_AUTH_TOKEN']}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if REPLICA + deployment not in \
                    (entry / "cmdline").read_bytes().decode(errors="replace") \
                    or token not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found

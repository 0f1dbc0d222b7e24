#!/usr/bin/env bash
# The performance measurements that need a GPU, in one call of a lent GPU machine (the
# device tool allows 10 minutes a call): random-weight SD 1.5 served eagerly and compiled,
# each against the same pipeline called directly, and SDXL eagerly. Each step has its own
# time limit, writes its JSON and log to OUT_DIR as it ends, and a step that fails or
# runs out of time does not stop the next.
#
#   bash benchmarks/gpu/fetch_wheels.sh                # here: the wheels that machine lacks
#   bash benchmarks/gpu/session.sh OUT_DIR             # there, from the repo root, .whl carried
#   SMOKE=1 bash benchmarks/gpu/session.sh OUT_DIR     # anywhere: the same steps, tiny and short
#
# Steps and their limits in seconds, most wanted first: install 40, SD 1.5 built 60, SD 1.5
# eager 110, SD 1.5 compiled (reduce-overhead: CUDA graphs) 200, SD 1.5 with the batch
# size measured at load (max_batch_size = "auto") 120, SDXL built 40, SDXL eager 90.
# About 450 s expected; run it with the call's timeout_s at 600, which cuts the last
# steps only if the first ones run to their limits. The results are the README's "On a
# GPU" rows.
set -uo pipefail
out=${1:?usage: session.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/../.."
started=$(date +%s)

log() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$out/session.log"; }

# step NAME LIMIT COMMAND...: run it under its time limit; its whole output is appended to
# OUT_DIR/steps.log, its last lines to OUT_DIR/session.log (the device returns 8 files).
step() {
  local name=$1 limit=$2 output
  shift 2
  log "$name (limit ${limit}s): $*"
  output=$(mktemp)
  timeout -k 10 "$limit" "$@" > "$output" 2>&1
  local rc=$?
  { echo "=== $name: $*"; cat "$output"; } >> "$out/steps.log"
  grep -vE '^\s*$|it/s\]|s/it\]|Warning|warn\(|^\[transformers\]' "$output" | tail -n 6 | tee -a "$out/session.log"
  rm -f "$output"
  log "$name: exit $rc"
  return $rc
}

if [ -d .whl ]; then
  # The wheels, and this project from src/ as it is: its entry points (the diffusers
  # backend is one) declared by a dist-info written from pyproject.toml, so that nothing
  # is built there (that machine's setuptools may be older than the one pyproject asks).
  site=/tmp/diffuserve-site
  step install 40 python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$site" .whl/*.whl
  python3 - "$site" <<'EOF'
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
EOF
  export PYTHONPATH=$site:$PWD/src
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TORCHINDUCTOR_CACHE_DIR=/tmp/diffuserve-kernels
python3 - <<'EOF' 2>&1 | tee -a "$out/session.log"
import platform, torch, diffusers, diffuserve
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"python {platform.python_version()}, torch {torch.__version__}, diffusers "
      f"{diffusers.__version__}, diffuserve from {diffuserve.__file__}; {gpu}; "
      f"{__import__('os').cpu_count()} CPUs")
EOF

overhead=(python3 benchmarks/server_overhead.py)
if [ -n "${SMOKE:-}" ]; then
  # The same steps on the tests' tiny pipeline, a few requests each (any machine).
  sd15=(--tiny --size 256x256 --steps 2 --requests 3 --concurrent-requests 8 --clients 4)
  sdxl=("${sd15[@]}")
else
  build=(python3 benchmarks/reference_pipelines.py)
  step build-sd15 60 "${build[@]}" sd15 /tmp/sd15 --device cuda \
    || step build-sd15-cpu 60 "${build[@]}" sd15 /tmp/sd15
  sd15=(--model /tmp/sd15 --size 512x512 --steps 25 --requests 20 --concurrent-requests 64)
  sdxl=(--model /tmp/sdxl --size 1024x1024 --steps 25 --requests 4
        --concurrent-requests 12 --clients 8)
fi
step sd15-eager 110 "${overhead[@]}" "${sd15[@]}" --batch 8 --json "$out/sd15-eager.json"
step sd15-compiled 200 "${overhead[@]}" "${sd15[@]}" --batch 8 --compile reduce-overhead \
  --json "$out/sd15-compiled.json"
# Batches the card holds: enough clients to fill them, a few sequential requests.
step sd15-auto 120 "${overhead[@]}" "${sd15[@]}" --batch auto --requests 3 --clients 64 \
  --concurrent-requests 256 --json "$out/sd15-auto.json"
if [ -z "${SMOKE:-}" ]; then
  step build-sdxl 40 "${build[@]}" sdxl /tmp/sdxl --device cuda
fi
step sdxl-eager 90 "${overhead[@]}" "${sdxl[@]}" --batch 4 --json "$out/sdxl-eager.json"
log "done"

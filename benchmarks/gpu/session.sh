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
# shellcheck source=benchmarks/gpu/common.sh
. benchmarks/gpu/common.sh
install_wheels
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TORCHINDUCTOR_CACHE_DIR=/tmp/diffuserve-kernels
describe_machine

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

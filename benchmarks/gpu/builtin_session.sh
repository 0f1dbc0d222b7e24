#!/usr/bin/env bash
# The built-in model's decoders trained for many passes over all the data on a lent GPU
# machine, in one call of the device tool (10 minutes a call), both ways that
# benchmarks/builtin_latent_channels.py trains them: `control`, the shipped 4 latent
# channels alone (decoders that the shipped UNet's latents can use as they are), and
# `wide`, with 12 more channels from the 256 px artwork (which a UNet retrained on 16
# channels would need). Each is measured as on the CPU and leaves its trained modules
# (float16), a side-by-side sheet and its figures in OUT_DIR.
#
#   bash benchmarks/gpu/fetch_wheels.sh                # here: the wheels that machine lacks
#   bash benchmarks/gpu/builtin_session.sh prepare     # here: the artwork, into .gpu-data/
#   bash benchmarks/gpu/builtin_session.sh OUT_DIR     # there, .whl and .gpu-data carried
#   SMOKE=1 bash benchmarks/gpu/builtin_session.sh OUT_DIR   # anywhere: seconds, not minutes
#
# `prepare` needs `python -m train_builtin prepare-data` to have run here; it copies the
# artwork's npm tarball (16 MB) and the manifest, not the rendered arrays (0.9 GB): the
# GPU machine renders them. Steps and their limits in seconds: install 40, data 30,
# control 240 and wide 240 (each SECONDS_TRAINING, default 150, of training at batches of
# 64, and the rendering and measurements). Run it with the call's timeout_s at 600. The
# returned control.pt and wide.pt are what `builtin_latent_channels.py --init` reads.
set -uo pipefail
cd "$(dirname "$0")/../.."
cache=${DIFFUSERVE_TRAINING_CACHE:-$HOME/.cache/diffuserve/training}
tarball=lobehub-fluent-emoji-3d-1.1.0.tgz

if [ "${1:-}" = prepare ]; then
  set -e
  grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
  mkdir -p .gpu-data
  cp "$cache/$tarball" "$cache/data/manifest.jsonl" .gpu-data/
  du -sh .gpu-data
  exit 0
fi

out=${1:?usage: builtin_session.sh prepare | OUT_DIR}
mkdir -p "$out"
# shellcheck source=benchmarks/gpu/common.sh
. benchmarks/gpu/common.sh
install_wheels
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD/tools/train_builtin  # the trainer too
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
describe_machine

data=/tmp/diffuserve-data
mkdir -p "$data/assets"
step data 30 bash -c "tar -xzf .gpu-data/$tarball -C '$data/assets' --strip-components=2 \
  --wildcards 'package/assets/*.webp' && cp .gpu-data/manifest.jsonl '$data/' \
  && ls '$data/assets' | wc -l"

if [ -n "${SMOKE:-}" ]; then
  train=(--seconds 10 --batch 2 --eval-every 1000000)
else
  train=(--seconds "${SECONDS_TRAINING:-150}" --batch 64 --lr 5e-4 --eval-every 2000)
fi
for run in control wide; do
  step "$run" 240 python3 benchmarks/builtin_latent_channels.py --data "$data" \
    "${train[@]}" $([ $run = control ] && echo --control) --save "$out/$run.pt" \
    --save-dtype float16 --sheet "$out/$run.png" --json "$out/$run.json"
done
log "done"

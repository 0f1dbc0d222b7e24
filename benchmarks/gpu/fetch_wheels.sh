#!/usr/bin/env bash
# The wheels a bare GPU machine lacks to run diffuserve's GPU benchmarks, downloaded here
# (where pip reaches PyPI) into .whl/ for the machine's Python (3.12, x86-64 Linux;
# PYTHON_VERSION=3.11 for another).
# That machine already has torch, transformers, accelerate, safetensors, tokenizers,
# huggingface-hub, numpy, Pillow, httpx, h11, uvloop, prometheus-client, psutil and
# onnxruntime. The versions are read from the Python that runs this (PYTHON, default
# python3: the development environment), so the wheels are what this project is tested
# with there.
#
#   bash benchmarks/gpu/fetch_wheels.sh          # → .whl/, ignored by git
#   bash benchmarks/gpu/session.sh "$OUT"        # there, with .whl carried
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python=${PYTHON:-python3}
# diffuserve's dependencies (and the openai SDK's, for the benchmarks' client) that the
# machine lacks.
names=(
  diffusers importlib-metadata fastapi starlette opentelemetry-api uvicorn httptools
  pydantic pydantic-core pydantic-settings python-dotenv typing-inspection annotated-types
  platformdirs isal pybase64 orjson python-multipart limits deprecated
  openai httpx2 httpcore2 jiter sniffio lazy-importer truststore
)
mapfile -t wheels < <("$python" - "${names[@]}" <<'EOF'
import sys
from importlib.metadata import version
for name in sys.argv[1:]:
    print(f"{name}=={version(name)}")
EOF
)
mkdir -p .whl
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
du -sh .whl

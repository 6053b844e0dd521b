#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine (or a venv): system tools, PyTorch, the package and its
# Python dependencies.
#   bash scripts/setup.sh         # what the app and CLI need
#   bash scripts/setup.sh --dev   # plus the test tools (pytest, gradio_client, Playwright + Debian's Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

apt_packages=(ffmpeg espeak-ng libgl1 libglib2.0-0)  # libGL/glib: OpenCV as mediapipe installs it
[ $dev = 1 ] && apt_packages+=(chromium)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# apt-get that waits (up to 10 minutes, with one message) while another apt/dpkg process (unattended
# upgrades, a second set-up) holds a package lock, instead of failing at once: apt's own
# DPkg::Lock::Timeout covers only the dpkg lock, not the lists lock of `apt-get update`
apt_get() {  # apt_get [sudo] [env VAR=VALUE] apt-get ARGS...
  local start=$SECONDS said=0 log
  log=$(mktemp)
  until "$@" >"$log" 2>&1; do
    if ! grep -q -e "Could not get lock" -e "Unable to lock" -e "Unable to acquire" "$log" \
        || [ $((SECONDS - start)) -ge 600 ]; then
      cat "$log" >&2
      rm -f "$log"
      return 1
    fi
    if [ $said = 0 ]; then
      echo "another apt/dpkg process holds the package lock; waiting for it to finish (up to 10 minutes)..." >&2
      said=1
    fi
    sleep 5
  done
  rm -f "$log"
}
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ ${#sudo[@]} = 1 ]; }; then
    apt_get "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt_get "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${missing[@]}"
  else
    echo "please install: ${missing[*]}" >&2
    exit 1
  fi
fi

python3 -m pip install -q --upgrade pip >/dev/null
# PyTorch first, pinned, so that nothing below pulls another build (on a CUDA machine install your CUDA build first)
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
# the package itself, editable, with its dependencies (read by pyproject.toml from the requirement files):
# `import lipsync` from anywhere, and the commands lipsync, lipsync-app, lipsync-convert, lipsync-evaluate
if [ $dev = 1 ]; then
  python3 -m pip install -q -e ".[dev]"
else
  python3 -m pip install -q -e .
fi
echo "set-up done"

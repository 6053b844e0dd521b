#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine (or a venv): system tools, PyTorch, the package and its
# Python dependencies.
#   bash scripts/setup.sh                   # what the app and CLI need
#   bash scripts/setup.sh --dev             # plus the test tools (pytest, gradio_client, Playwright + Chromium)
#   bash scripts/setup.sh [--dev] -- CMD    # then run CMD (python3 app.py) in the environment it installed into
# It installs into the active virtualenv (or conda env), else into python3 when pip may install there, else (a
# system Python that is externally managed, PEP 668: Debian 12, Ubuntu 24.04) into the virtualenv .venv in this
# repository, made here or reused, and says how to activate it.
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
repo=$PWD
dev=0
run=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --) shift; run=("$@"); break ;;
    *) echo "unknown option $1; usage: bash scripts/setup.sh [--dev] [-- COMMAND ...]" >&2; exit 2 ;;
  esac
  shift
done

# Where to install. pip refuses to install into a Python that the system manages ("externally-managed-
# environment"), and Debian's python3 may come without pip: then into a virtualenv, .venv (made by
# `python3 -m venv`, which on Debian needs the python3-venv package).
venv=.venv
use_venv=0
in_venv() { "$1" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' >/dev/null 2>&1; }
venv_ok() { "$venv/bin/python" -m pip --version >/dev/null 2>&1; }
if ! command -v python3 >/dev/null 2>&1; then
  use_venv=1
elif ! in_venv python3; then
  if [ -x "$venv/bin/python" ]; then
    use_venv=1  # made by an earlier run
  elif ! probe=$(python3 -m pip install --dry-run --no-index --no-deps -q pip 2>&1) \
      && grep -q -e "externally-managed-environment" -e "No module named pip" <<<"$probe"; then
    use_venv=1
  fi
fi

apt_packages=(ffmpeg espeak-ng libgl1 libglib2.0-0)  # libGL/glib: OpenCV as mediapipe installs it
[ $dev = 1 ] && apt_packages+=(chromium)
if [ $use_venv = 1 ] && ! venv_ok; then
  apt_packages+=(python3 python3-venv)
fi
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

py=python3
if [ $use_venv = 1 ]; then
  if ! venv_ok; then
    echo "pip may not install into this system's python3 (externally managed, PEP 668, or no pip):" \
      "installing into the virtualenv $venv" >&2
    python3 -m venv --clear "$venv"  # --clear: a .venv left half-made (without pip) is made anew
  fi
  py=$venv/bin/python
fi
"$py" -m pip install -q --upgrade pip >/dev/null
# PyTorch first, pinned, so that nothing below pulls another build (on a CUDA machine install your CUDA build first)
"$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q torch==2.13.0
# the package itself, editable, with its dependencies (read by pyproject.toml from the requirement files):
# `import lipsync` from anywhere, and the commands lipsync, lipsync-app, lipsync-convert, lipsync-evaluate
if [ $dev = 1 ]; then
  "$py" -m pip install -q -e ".[dev]"
else
  "$py" -m pip install -q -e .
fi

# One OpenCV. face-alignment requires opencv-python, mediapipe (and this package) opencv-contrib-python; both
# write the same cv2/ folder, so the one pip installed last decides what `import cv2` is, and uninstalling either
# later deletes files the other needs. Keep opencv-contrib-python alone: the main modules plus contrib's (the face
# cascades of the "opencv" detector). `pip check` then names face-alignment's opencv-python as missing: on purpose.
opencv=$("$py" - 2>/dev/null <<'PY' || true
import importlib.metadata as m
names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in m.distributions()}
others = sorted(names & {"opencv-python", "opencv-python-headless", "opencv-contrib-python-headless"})
if "opencv-contrib-python" in names and others:
    print(m.version("opencv-contrib-python"), *others)
PY
)
if [ -n "$opencv" ]; then
  read -r opencv_version opencv_others <<<"$opencv"
  # shellcheck disable=SC2086  # several names
  "$py" -m pip uninstall -q -y opencv-contrib-python $opencv_others
  "$py" -m pip install -q --no-deps "opencv-contrib-python==$opencv_version"
fi
echo "set-up done"
if [ $use_venv = 1 ]; then
  echo "installed into $repo/$venv: run 'source $venv/bin/activate' in each new shell;" \
    "python3 app.py, lipsync and python3 -m pytest then use it"
fi
if [ ${#run[@]} -gt 0 ]; then
  if [ $use_venv = 1 ]; then
    export VIRTUAL_ENV=$repo/$venv PATH=$repo/$venv/bin:$PATH
  fi
  cd "$here"
  exec "${run[@]}"
fi

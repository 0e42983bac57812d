#!/usr/bin/env bash
# napari-connectome set-up in one command.
#
#   bash run.sh          install everything, then open napari with the sample and the docks
#                        (no display: run headless under Xvfb, write outputs + a screenshot)
#   bash run.sh test     install the development extras, then lint and run the whole test suite
#                        under Xvfb (this is what CI runs)
#
# Installs: the Debian packages napari needs (only those missing, only when run as root),
# a virtual environment in .venv, and the package with its dependencies.
set -euo pipefail
cd "$(dirname "$0")"

MODE="${1:-demo}"
case "$MODE" in
  demo|test) ;;
  *) echo "usage: bash run.sh [test]" >&2; exit 2 ;;
esac

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: napari-connectome needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)." >&2
  echo "       Install python3 (3.11+) or set PYTHON=/path/to/python3.x" >&2
  exit 1
fi

# Debian packages napari needs under Xvfb / on a bare machine (checked in a bare Debian chroot).
DEBIAN_PACKAGES="xvfb xauth libgl1 libegl1 libfontconfig1 libglib2.0-0 libdbus-1-3 libxkbcommon-x11-0
  libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 libxcb-shape0"
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  DEBIAN_PACKAGES="$DEBIAN_PACKAGES python3-venv"
fi
if command -v dpkg >/dev/null 2>&1; then
  missing=""
  for pkg in $DEBIAN_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ]; then
      echo ">> installing Debian packages:$missing"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
      echo ">> warning: missing Debian packages:$missing" >&2
      echo "   install them with: sudo apt-get install -y --no-install-recommends$missing" >&2
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv"
  "$PYTHON" -m venv .venv
fi
VENV_PY=.venv/bin/python
"$VENV_PY" -m pip install -q --upgrade pip
# torch first, pinned: with it in place the package's "torch>=2.1" installs nothing more,
# so a CPU-only machine that has the CPU wheel locally does not pull a multi-GB CUDA build.
if ! "$VENV_PY" -c 'import torch' 2>/dev/null; then
  echo ">> installing torch 2.13.0"
  "$VENV_PY" -m pip install -q "torch==2.13.0"
fi

if [ "$MODE" = "test" ]; then
  echo ">> installing napari-connectome with the development extras"
  "$VENV_PY" -m pip install -q -e ".[dev]"
  echo ">> ruff"
  .venv/bin/ruff check src tests benchmarks scripts
  .venv/bin/ruff format --check src tests benchmarks scripts
  echo ">> pytest (under Xvfb)"
  export NAPARI_ENSURE_PLUGIN_MAIN_THREAD=1
  exec "$VENV_PY" -m pytest "${@:2}"
fi

echo ">> installing napari-connectome with napari and Qt"
"$VENV_PY" -m pip install -q -e ".[all]"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/napari-connectome demo
else
  echo ">> no display: running headless under Xvfb"
  exec .venv/bin/napari-connectome demo --headless --output napari-connectome-output
fi

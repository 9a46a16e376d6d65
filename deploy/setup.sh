#!/usr/bin/env bash
# Set up vestwatch on a fresh Debian/Ubuntu machine: system packages, a venv in .venv, the package.
#   deploy/setup.sh          what the daemon needs
#   deploy/setup.sh --dev    plus what the tests need (GStreamer RTSP server, pytest, ruff)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
[[ "${1:-}" == "--dev" ]] && dev=true

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

packages=(ffmpeg python3-venv)
if $dev; then
    # a real RTSP server for the tests, run by Debian's own python3 (a venv cannot import gi)
    packages+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
               gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav
               chromium  # a real browser for the live-view test
               mosquitto)  # a real MQTT broker for the MQTT sink's tests (started by them, not as a service)
fi
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: on a CPU-only machine with a local CPU wheel this avoids multi-GB CUDA builds
.venv/bin/python -m pip install -q "torch==2.13.0"
if $dev; then
    .venv/bin/python -m pip install -q -e '.[dev]'
else
    .venv/bin/python -m pip install -q -e .
fi
echo "vestwatch set up in $(pwd)/.venv"

#!/usr/bin/env bash
# Set up vestwatch on a fresh Debian/Ubuntu machine: system packages, a venv in .venv, the package.
#   deploy/setup.sh          what the daemon needs
#   deploy/setup.sh --dev    plus what the tests need (GStreamer RTSP server, Mosquitto, promtool, pytest, ruff,
#                            Chromium, Home Assistant 2024.1 in .ha-venv)
# Offline, from a bundle made by deploy/bundle.sh: no network, no apt, no pip index.
#   deploy/setup.sh --offline DIR
#       DIR: the bundle, or the folder of its split parts (checked against PARTS.sha256, then joined
#       under $TMPDIR). Every file is checked against SHA256SUMS, the wheels against requirements.txt;
#       they go into .venv, the model and default config beside the package. Then: .venv/bin/vestwatch run
#   deploy/setup.sh --offline DIR --target T
#       for a machine whose python3 (or $PYTHON) already has torch >= 2.4: everything but torch into
#       the folder T, no venv. Then: PYTHONPATH=T python3 -m pipeline.cli run   (any vestwatch command)
#   The daemon needs no system package at run time but python3 of the bundle's version (not even
#   python3-venv: the venv gets its pip from the bundle); ffmpeg and GStreamer are for the tests only.
set -euo pipefail

torch_version=2.13.0 # deploy/bundle.sh bundles the same

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "setup.sh: $*" >&2; exit 2; }

dev=false offline='' target=''
while (($#)); do
    case $1 in
        --dev) dev=true ;;
        --offline) offline=${2:?--offline needs the bundle folder}; shift ;;
        --target) target=${2:?--target needs a folder}; shift ;;
        -h | --help) usage ;;
        *) echo "setup.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
# the folders as the caller meant them, before the cd below
if [[ -n $offline ]]; then
    [[ -d $offline ]] || die "$offline: no such folder"
    offline=$(cd "$offline" && pwd)
    ! $dev || die "--dev needs the network (the test tools are not in a bundle)"
    if [[ -n $target ]]; then mkdir -p "$target" && target=$(cd "$target" && pwd); fi
else
    [[ -z $target ]] || die "--target goes with --offline DIR"
fi
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

install_offline() {
    local bundle=$offline
    if [[ -f $bundle/PARTS.sha256 ]]; then
        # parts of a split bundle: all there and intact, then joined into a scratch folder
        (cd "$bundle" && sha256sum --quiet -c PARTS.sha256) || die "$bundle: a part is missing or damaged"
        scratch=$(mktemp -d "${TMPDIR:-/tmp}/vestwatch-bundle.XXXXXX")
        trap 'rm -rf "$scratch"' EXIT
        local part
        while read -r _ part; do cat "$bundle/$part"; done <"$bundle/PARTS.sha256" | tar -xf - -C "$scratch"
        bundle=$scratch
    fi
    [[ -f $bundle/SHA256SUMS && -f $bundle/BUNDLE ]] || die "$offline is not a bundle from deploy/bundle.sh"
    (cd "$bundle" && sha256sum --quiet -c SHA256SUMS) || die "$bundle: files differ from its SHA256SUMS"
    info() { sed -n "s/^$1=//p" "$bundle/BUNDLE"; }

    local py=$python
    [[ -n $target || ! -x .venv/bin/python ]] || py=.venv/bin/python
    local have
    have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ $(info python) == "$have" ]] ||
        die "the bundle is for Python $(info python), $py is $have (deploy/bundle.sh DIR --python $have makes one)"
    local pipwhl=("$bundle"/wheels/pip-*.whl)
    local pip_args=(install -q --no-index --find-links "$bundle/wheels" --require-hashes --no-deps)

    local site
    if [[ -n $target ]]; then
        local torch_have
        torch_have=$(cd / && "$python" -W ignore -c 'import torch; print(torch.__version__)' 2>/dev/null) || torch_have=none
        [[ $torch_have =~ ^([0-9]+)\.([0-9]+) ]] && ((BASH_REMATCH[1] * 1000 + BASH_REMATCH[2] >= 2004)) ||
            die "--target needs a $python with torch >= 2.4 (it has $torch_have); without --target the bundle's torch goes into .venv"
        # pip run from its bundled wheel: the machine's python3 needs no pip of its own
        "$python" "${pipwhl[0]}/pip" "${pip_args[@]}" --upgrade --target "$target" -r "$bundle/requirements-notorch.txt"
        site=$(cd / && PYTHONPATH=$target "$python" -c 'from stages.config import REPO_ROOT; print(REPO_ROOT)')
        [[ $site == "$target" ]] || die "the installed package looks for its data in $site, not $target"
    else
        # --without-pip: no python3-venv (ensurepip) needed; pip comes from the bundle
        [[ -x .venv/bin/python ]] || "$python" -m venv --without-pip .venv
        .venv/bin/python "${pipwhl[0]}/pip" install -q --no-index --no-deps --upgrade "${pipwhl[0]}"
        # the other onnxruntime build (e.g. from an earlier online setup) would share its files
        local other=onnxruntime-gpu
        [[ $(info flavour) == cpu ]] || other=onnxruntime
        if .venv/bin/python -m pip show -q "$other" >/dev/null 2>&1; then
            .venv/bin/python -m pip uninstall -q -y "$other"
        fi
        .venv/bin/python -m pip "${pip_args[@]}" -r "$bundle/requirements.txt"
        local venv_python=$PWD/.venv/bin/python
        site=$(cd / && "$venv_python" -I -c 'from stages.config import REPO_ROOT; print(REPO_ROOT)')
        [[ $site == "$PWD/.venv/"* ]] || die "the installed package looks for its data in $site, not in .venv"
    fi
    # the daemon finds its model and default config beside its packages (stages.config.REPO_ROOT)
    mkdir -p "$site/weights"
    cp -r "$bundle/data/weights/." "$site/weights/"
    cp "$bundle/data/config.toml" "$site/config.toml"

    if [[ -n $target ]]; then
        echo "vestwatch $(info vestwatch) installed offline in $target for $python (its torch $torch_have)"
        echo "run it with: PYTHONPATH=$target $python -m pipeline.cli run"
    else
        echo "vestwatch $(info vestwatch) ($(info flavour), torch $(info torch)) installed offline in $(pwd)/.venv"
        echo "run it with: .venv/bin/vestwatch run   (default config: $site/config.toml)"
    fi
}

if [[ -n $offline ]]; then
    install_offline
    exit 0
fi

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

packages=(ffmpeg python3-venv)
if $dev; then
    # a real RTSP server for the tests, run by Debian's own python3 (a venv cannot import gi)
    packages+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
               gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav
               chromium  # a real browser for the live-view test
               mosquitto  # a real MQTT broker for the MQTT sink's tests (started by them, not as a service)
               prometheus)  # for its promtool, which lints /metrics in the tests (the server itself goes unused)
fi
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: on a CPU-only machine with a local CPU wheel this avoids multi-GB CUDA builds
.venv/bin/python -m pip install -q "torch==$torch_version"
if $dev; then
    .venv/bin/python -m pip install -q -e '.[dev]'
    PYTHON="$python" deploy/home-assistant.sh  # a real Home Assistant for its test, in .ha-venv
else
    .venv/bin/python -m pip install -q -e .
fi
echo "vestwatch set up in $(pwd)/.venv"

#!/usr/bin/env bash
# CI: the offline install works end to end, with no pip index reachable. Builds the CPU bundle in
# 60 MB parts (deploy/bundle.sh), installs it from the parts with deploy/setup.sh --offline into a
# fresh venv, runs the daemon on its built-in default (demo stream, CPU) until it publishes a
# detection, stops it with SIGTERM (exit 0 expected); then the same for --target, beside a python
# that already has torch. Prints sizes and times. Everything lives in one temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

work=$(mktemp -d "${TMPDIR:-/tmp}/vestwatch-check-bundle.XXXXXX")
daemon='' subscriber=''
cleanup() {
    for pid in $daemon $subscriber; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "check-bundle: FAILED: $*" >&2; exit 1; }
step() { printf '\n== check-bundle: %s\n' "$*"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }'; }
mb() { du -sb "$@" | awk '{ s += $1 } END { printf "%.0f MB", s / 1e6 }'; }
started=$EPOCHREALTIME

step "bundle: CPU, split into 60 MB parts"
t=$EPOCHREALTIME
deploy/bundle.sh "$work/bundle" --split-mb 60
bundle_s=$(since "$t")
bundle=$work/bundle
ls "$bundle"/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 || fail "no CPU torch wheel in the bundle"
! ls "$bundle"/wheels/nvidia* >/dev/null 2>&1 || fail "CUDA libraries in a CPU bundle"
parts=("$bundle"/parts/vestwatch-bundle.tar.part-*)
largest=$(stat -c %s "${parts[@]}" | sort -n | tail -1)
((largest <= 60000000)) || fail "a part of $largest bytes"
sizes="bundle $(mb "$bundle/wheels" "$bundle/data") ($(ls "$bundle"/wheels | wc -l) wheels), ${#parts[@]} parts, largest $((largest / 1000000)) MB; built in $bundle_s"
echo "$sizes"

# from here on no index can be reached and no machine config (find-links) counts: the bundle alone
export PIP_NO_INDEX=1 PIP_INDEX_URL=http://127.0.0.1:9/simple PIP_CONFIG_FILE=/dev/null PIP_RETRIES=0 PIP_TIMEOUT=5
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL

free_ports() {
    "$python" -c 'import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))'
}

# run_daemon LABEL CMD...: CMD run on the built-in default until the first published detection,
# then SIGTERM; prints the time to the first detection and checks exit code 0
run_daemon() {
    local label=$1
    shift
    local dir=$work/run-$label pub http t=$EPOCHREALTIME deadline=$((SECONDS + 180))
    mkdir -p "$dir"
    read -r pub http < <(free_ports)
    # own ports and runtime dir, so that a daemon or test already on this machine is no matter
    (cd "$dir" && VESTWATCH_RUNTIME_DIR=$dir/runtime VESTWATCH_PUBLISH=pub+bind:tcp://127.0.0.1:$pub \
        VESTWATCH_HTTP=127.0.0.1:$http VESTWATCH_DETECTOR__DEVICE=cpu exec "$@" run) >"$dir/daemon.log" 2>&1 &
    daemon=$!
    (cd "$dir" && exec "$@" subscribe --endpoint "tcp://127.0.0.1:$pub" --timeout 180) >"$dir/det.jsonl" 2>"$dir/subscribe.log" &
    subscriber=$!
    until grep -q '"names": \["' "$dir/det.jsonl"; do
        if ! kill -0 "$daemon" 2>/dev/null; then
            cat "$dir/daemon.log" >&2
            fail "$label: the daemon stopped before its first detection"
        fi
        if ((SECONDS > deadline)); then
            cat "$dir/daemon.log" >&2
            fail "$label: no detection within 180 s"
        fi
        sleep 0.2
    done
    local first
    first=$(since "$t")
    kill "$subscriber" 2>/dev/null || true
    wait "$subscriber" 2>/dev/null || true
    subscriber=''
    t=$EPOCHREALTIME
    kill -TERM "$daemon"
    local i rc=0
    for ((i = 0; i < 300; i++)); do kill -0 "$daemon" 2>/dev/null && sleep 0.1 || break; done
    kill -0 "$daemon" 2>/dev/null && kill -KILL "$daemon" # still there after 30 s: wait reports it
    wait "$daemon" || rc=$?
    daemon=''
    ((rc == 0)) || { cat "$dir/daemon.log" >&2; fail "$label: exit code $rc after SIGTERM"; }
    echo "$label: first detection $first after start: $(grep -m1 '"names": \["' "$dir/det.jsonl" | grep -o '"counts": {[^}]*}')"
    echo "$label: stopped by SIGTERM in $(since "$t"), exit code 0"
    results+=("$label: first detection $first after start")
}
results=()

step "setup.sh --offline PARTS: a fresh venv on a 'server' with deploy/setup.sh and the parts alone"
mkdir -p "$work/site/deploy"
cp deploy/setup.sh "$work/site/deploy/"
t=$EPOCHREALTIME
"$work/site/deploy/setup.sh" --offline "$bundle/parts"
install_s=$(since "$t")
echo "venv install: $install_s, .venv $(mb "$work/site/.venv")"
run_daemon venv "$work/site/.venv/bin/vestwatch"

step "setup.sh --offline DIR --target T: a python that already has torch"
"$python" -m venv --without-pip "$work/torch-env"
pipwhl=("$bundle"/wheels/pip-*.whl)
torch_pin=$(grep -o '^torch==[^ ]*' "$bundle/requirements.txt")
"$work/torch-env/bin/python" "${pipwhl[0]}/pip" install -q --no-index --find-links "$bundle/wheels" "$torch_pin"
t=$EPOCHREALTIME
PYTHON=$work/torch-env/bin/python "$work/site/deploy/setup.sh" --offline "$bundle" --target "$work/target"
target_s=$(since "$t")
[[ ! -e $work/target/torch ]] || fail "--target installed torch"
echo "target install: $target_s, $(mb "$work/target")"
run_daemon target env "PYTHONPATH=$work/target" "$work/torch-env/bin/python" -m pipeline.cli

step "summary"
echo "$sizes"
echo "venv install from the parts: $install_s; target install (no torch): $target_s"
printf '%s\n' "${results[@]}"
echo "check-bundle: passed in $(since "$started")"

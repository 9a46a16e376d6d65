#!/usr/bin/env bash
# A real Home Assistant for the tests (deploy/setup.sh --dev runs this): the 2024.1 release in its own
# venv, .ha-venv, installed with the constraints file shipped inside its own wheel (what keeps pip from
# backtracking for ever), plus what the integrations the tests load need, from their manifests (MQTT's
# paho-mqtt 1.6.1, the recorder's SQLAlchemy...), so that it installs nothing when it starts (--skip-pip).
set -euo pipefail
cd "$(dirname "$0")/.."
HA_VERSION=2024.1.6
python=${PYTHON:-python3}
if [[ -x .ha-venv/bin/hass ]] && .ha-venv/bin/python -c "import homeassistant.const as c, sys; sys.exit(c.__version__ != '$HA_VERSION')"; then
    exit 0
fi
[[ -x .ha-venv/bin/python ]] || "$python" -m venv .ha-venv
.ha-venv/bin/python -m pip install -q --upgrade pip
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
.ha-venv/bin/python -m pip download -q --no-deps -d "$wheels" "homeassistant==$HA_VERSION"
.ha-venv/bin/python - "$wheels" <<'PY'
import pathlib, sys, zipfile
folder = pathlib.Path(sys.argv[1])
(wheel,) = folder.glob("homeassistant-*.whl")
(folder / "constraints.txt").write_bytes(zipfile.ZipFile(wheel).read("homeassistant/package_constraints.txt"))
PY
.ha-venv/bin/python -m pip install -q -c "$wheels/constraints.txt" "$wheels"/homeassistant-*.whl
# the requirements of the integrations the tests load, and of theirs, as their manifests say
.ha-venv/bin/python - > "$wheels/integrations.txt" <<'PY'
import json, pathlib
import homeassistant.components as components
root = pathlib.Path(components.__file__).parent
wanted, seen, requirements = ["api", "config", "onboarding", "mqtt", "http"], set(), set()
while wanted:
    name = wanted.pop()
    if name in seen:
        continue
    seen.add(name)
    manifest = json.loads((root / name / "manifest.json").read_text())
    requirements.update(manifest.get("requirements", []))
    wanted += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
print("\n".join(sorted(requirements)))
PY
.ha-venv/bin/python -m pip install -q -c "$wheels/constraints.txt" -r "$wheels/integrations.txt"
echo "Home Assistant $HA_VERSION set up in $(pwd)/.ha-venv"

#!/usr/bin/env bash
# Build an offline install bundle for a site server without internet: a wheelhouse of every runtime
# dependency for the target's Python and platform, the project's wheel, and what the daemon reads
# from the checkout at run time (weights/, config.toml). On the server: deploy/setup.sh --offline DIR.
#   deploy/bundle.sh DIR [--cuda] [--python X.Y] [--platform TAG]... [--split-mb N] [--torch-index URL]
#     DIR                a new or empty folder
#     --cuda             PyPI's CUDA torch and onnxruntime-gpu (several GB) instead of the CPU builds
#     --python X.Y       the target's Python (default: this machine's python3, or $PYTHON)
#     --platform TAG     the target's wheel platform, e.g. manylinux_2_28_x86_64; older manylinux tags
#                        are added (pip does not); repeatable; default: this machine's
#     --split-mb N       also pack the bundle as one tar in parts of at most N MB (10^6 bytes), with
#                        PARTS.sha256, in DIR/parts: setup.sh --offline takes that folder alone
#     --torch-index URL  an index with the CPU torch wheel, where no local copy serves the target
#                        (e.g. https://download.pytorch.org/whl/cpu); pip's own config is used too
# DIR gets: wheels/, data/ (weights/, config.toml), requirements.txt (every package pinned, with its
# sha256), requirements-notorch.txt (the same less torch and what only torch needs, for --target),
# BUNDLE (what it was made for), SHA256SUMS (every file).
# pip evaluates dependencies' environment markers for the Python running it, not the target's: build
# with the target's Python version and OS (the default).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "bundle.sh: $*" >&2; exit 2; }

dir='' cuda=false pyver='' split_mb='' torch_index=''
platforms=()
while (($#)); do
    case $1 in
        --cuda) cuda=true ;;
        --python) pyver=${2:?--python needs X.Y}; shift ;;
        --platform) platforms+=("${2:?--platform needs a tag}"); shift ;;
        --split-mb) split_mb=${2:?--split-mb needs a number}; shift ;;
        --torch-index) torch_index=${2:?--torch-index needs a URL}; shift ;;
        -h | --help) usage ;;
        -*) echo "bundle.sh: unknown option $1" >&2; usage 2 >&2 ;;
        *) [[ -z $dir ]] || die "one DIR only"; dir=$1 ;;
    esac
    shift
done
[[ -n $dir ]] || usage 2 >&2
[[ -z $split_mb || $split_mb =~ ^[1-9][0-9]*$ ]] || die "--split-mb takes a whole number of MB"
[[ ! -e $dir || -z $(ls -A "$dir") ]] || die "$dir is not empty"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

python=${PYTHON:-python3}
host_pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pyver=${pyver:-$host_pyver}
[[ $pyver =~ ^3\.[0-9]+$ ]] || die "--python takes X.Y, e.g. 3.11"
[[ $pyver == "$host_pyver" ]] ||
    echo "bundle.sh: warning: $python is $host_pyver; dependencies' python_version markers are judged for it" >&2

# pip matches --platform literally: a manylinux_2_28 target must also accept manylinux_2_17 wheels etc.
mapfile -t platforms < <("$python" - "${platforms[@]}" <<'EOF'
import re
import sys

LEGACY = {(2, 5): "manylinux1", (2, 12): "manylinux2010", (2, 17): "manylinux2014"}
tags = sys.argv[1:]
if not tags:  # this machine's: every platform its pip accepts, less linux_* (built locally, not portable)
    from pip._vendor.packaging.tags import sys_tags

    tags = [t.platform for t in sys_tags() if not t.platform.startswith("linux_")]
out = []
for tag in tags:
    legacy = {name: version for version, name in LEGACY.items()}
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", tag)
    m1 = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)", tag)
    if m1:
        (major, minor), arch = legacy[m1[1]], m1[2]
    elif m:
        major, minor, arch = int(m[1]), int(m[2]), m[3]
    else:
        out.append(tag)
        continue
    for y in range(minor, 4, -1):
        out.append(f"manylinux_{major}_{y}_{arch}")
        if (major, y) in LEGACY:
            out.append(f"{LEGACY[major, y]}_{arch}")
for tag in dict.fromkeys(out):
    print(tag)
EOF
)
((${#platforms[@]})) || die "no platform tags"

# the torch version deploy/setup.sh pins, kept in one place
torch_version=$(sed -n 's/^torch_version=\([0-9.]*\).*/\1/p' "$root/deploy/setup.sh")
[[ -n $torch_version ]] || die "no torch_version= line in deploy/setup.sh"
if $cuda; then
    flavour=cuda ort=onnxruntime-gpu
    torch_req="torch===$torch_version" # exactly PyPI's build: a local 2.13.0+cpu would sort above it
elif [[ ${platforms[0]} == *x86_64 || ${platforms[0]} == win_amd64 ]]; then
    flavour=cpu ort=onnxruntime
    torch_req="torch==$torch_version+cpu" # PyPI's x86_64 Linux torch is the CUDA build (GBs)
else
    flavour=cpu ort=onnxruntime
    torch_req="torch==$torch_version" # PyPI's aarch64 Linux and macOS torch are CPU builds
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vestwatch-bundle.XXXXXX")
# a failed build leaves DIR empty again, so that the next try is not refused
trap 'status=$?; rm -rf "$work"; ((status == 0)) || find "$dir" -mindepth 1 -delete' EXIT
mkdir -p "$dir/wheels" "$dir/data"

# the runtime dependencies from pyproject.toml, with torch and onnxruntime chosen here rather than by
# markers, which pip would judge for this machine
"$python" - "$root/pyproject.toml" "$torch_req" "$ort" "$pyver" >"$work/requirements.in" <<'EOF'
import re
import sys

from pip._vendor.packaging.markers import Marker

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

path, torch_req, ort, pyver = sys.argv[1:]
with open(path, "rb") as file:
    deps = tomllib.load(file)["project"]["dependencies"]
out, ort_spec = [torch_req, "pip"], ""  # pip: the server's venv gets its pip from the bundle
for dep in deps:
    name = re.match(r"[A-Za-z0-9._-]+", dep)[0]
    canonical = re.sub(r"[-_.]+", "-", name).lower()
    if canonical == "torch":
        continue
    if canonical in ("onnxruntime", "onnxruntime-gpu"):
        ort_spec = dep[len(name) :].split(";")[0].strip()
        continue
    if ";" in dep:  # a marker on the Python version is judged for the target's; any other is for bundle.sh
        dep, marker = (part.strip() for part in dep.split(";", 1))
        if set(re.findall(r"[a-z_]+(?=\s*[<>=!~])", marker)) - {"python_version"}:
            sys.exit(f"bundle.sh: {dep!r} has the marker {marker!r}; decide in bundle.sh which package a bundle takes")
        if not Marker(marker).evaluate({"python_version": pyver}):
            continue
    out.append(dep)
out.append(ort + ort_spec)
print("\n".join(out))
EOF

target=(--only-binary=:all: --implementation cp --python-version "$pyver")
for tag in "${platforms[@]}"; do target+=(--platform "$tag"); done
extra=()
[[ -z $torch_index ]] || extra=(--extra-index-url "$torch_index")
# pip, less the warning that a machine whose config lists local file:// indexes prints for each
# project they lack
pip() { "$python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

echo "bundle.sh: $flavour bundle for Python $pyver on ${platforms[0]}: $(paste -sd' ' "$work/requirements.in")"
hint=''
[[ $flavour == cuda || -n $torch_index ]] ||
    hint=" (no $torch_req for this target here? --torch-index https://download.pytorch.org/whl/cpu)"
pip download -q --progress-bar off "${target[@]}" "${extra[@]}" -d "$dir/wheels" -r "$work/requirements.in" ||
    die "pip download failed$hint"

# the project's wheel, built from a copy so that the checkout gets no build/ or egg-info
mkdir "$work/src"
tar -C "$root" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - \
    pyproject.toml README.md pipeline stages | tar -C "$work/src" -xf -
pip wheel -q --no-deps -w "$dir/wheels" "$work/src"

# the daemon finds its model and default config beside its packages (stages.config.REPO_ROOT);
# the wheel does not carry them
cp -r "$root/weights" "$dir/data/weights"
cp "$root/config.toml" "$dir/data/config.toml"

# what --target installs: what everything but torch (and pip) needs
grep -vE '^(torch|pip)([=<>!~ ]|$)' "$work/requirements.in" >"$work/notorch.in"
pip install -q --dry-run --ignore-installed --no-index --find-links "$dir/wheels" "${target[@]}" \
    --target "$work/dry" --report "$work/notorch.json" -r "$work/notorch.in"

"$python" - "$dir" "$work/notorch.json" <<'EOF'
import hashlib
import json
import re
import sys
from pathlib import Path

bundle, report = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


notorch = {canonical(item["metadata"]["name"]) for item in report["install"]} | {"vestwatch"}
full, subset, names = [], [], set()
for wheel in sorted((bundle / "wheels").glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    name = canonical(name)
    if name in names:
        sys.exit(f"bundle.sh: two wheels of {name}")
    names.add(name)
    line = f"{name}=={version} \\\n    --hash=sha256:{sha256(wheel)}\n"
    full.append(line)
    if name in notorch:
        subset.append(line)
if missing := notorch - names:
    sys.exit(f"bundle.sh: no wheel for {sorted(missing)}")
head = "# vestwatch offline bundle: every package pinned, installed with --no-index --require-hashes --no-deps\n"
(bundle / "requirements.txt").write_text(head + "".join(full))
(bundle / "requirements-notorch.txt").write_text(
    head.replace("every package", "for --target, every package but torch and what only torch needs,")
    + "".join(subset)
)
EOF

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ $commit == unknown || -z $(git -C "$root" status --porcelain 2>/dev/null) ]] || commit+="+changes"
cat >"$dir/BUNDLE" <<EOF
vestwatch=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml")
commit=$commit
python=$pyver
platforms=${platforms[*]}
flavour=$flavour
torch=$(sed -n 's/^torch==\([^ ]*\) .*/\1/p' "$dir/requirements.txt")
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
(cd "$dir" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum >"$work/SHA256SUMS")
mv "$work/SHA256SUMS" "$dir/SHA256SUMS"

mb() { du -sb "$@" | awk '{ s += $1 } END { printf "%.0f MB", s / 1e6 }'; }
echo "bundle.sh: $dir: $(find "$dir/wheels" -name '*.whl' | wc -l) wheels, $(mb "$dir/wheels" "$dir/data") in all"

if [[ -n $split_mb ]]; then
    # one tar cut into parts for size-limited transfers; PARTS.sha256 lists them in order
    mkdir "$dir/parts"
    (cd "$dir" && tar -cf - BUNDLE SHA256SUMS requirements.txt requirements-notorch.txt data wheels) |
        split -b "${split_mb}MB" -d -a 3 - "$dir/parts/vestwatch-bundle.tar.part-"
    (cd "$dir/parts" && sha256sum vestwatch-bundle.tar.part-* >PARTS.sha256)
    echo "bundle.sh: $dir/parts: $(($(wc -l <"$dir/parts/PARTS.sha256"))) parts of at most $split_mb MB"
fi

#!/usr/bin/env bash
# Build the clip-search serving image.
#
# Usage: container/build.sh [--offline|--online] [--tag TAG] [--base-image IMAGE]
#   --offline (default)  build the wheelhouse on the host (build_wheelhouse.sh) and install only
#                        from it inside the build: no PyPI, no CA set-up, works air-gapped.
#   --online             install from PyPI inside the build, CPU torch from --torch-index-url
#                        (default https://download.pytorch.org/whl/cpu); the project wheel still
#                        comes from the host.
#   --tag TAG            image tag (default clip-search:latest)
#   --no-cache           do not reuse Docker's build cache
#   --base-image IMAGE   Debian bookworm base (default debian:bookworm-slim; on a machine with no
#                        registry, run container/make_base_image.sh and pass local/debian:bookworm)
# Env: DOCKER (default /usr/bin/docker), PYTHON (host python for the wheelhouse, default python3).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
DOCKER="${DOCKER:-/usr/bin/docker}"
PYTHON="${PYTHON:-python3}"
MODE=offline
TAG=clip-search:latest
BASE_IMAGE=debian:bookworm-slim
TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
NO_CACHE=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --offline) MODE=offline ;;
        --online) MODE=online ;;
        --tag) TAG="$2"; shift ;;
        --base-image) BASE_IMAGE="$2"; shift ;;
        --torch-index-url) TORCH_INDEX_URL="$2"; shift ;;
        --no-cache) NO_CACHE=(--no-cache) ;;
        -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

BUILD="$HERE/.build"
rm -rf "$BUILD/wheelhouse" "$BUILD/project"
mkdir -p "$BUILD/wheelhouse" "$BUILD/project"
cp "$REPO/constraints.txt" "$BUILD/constraints.txt"

if [[ "$MODE" == offline ]]; then
    PYTHON="$PYTHON" "$HERE/build_wheelhouse.sh" "$BUILD/wheelhouse"
    offline=1
else
    # Only the project's own wheel; everything else comes from the indexes inside the build.
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$BUILD/wheelhouse" "$REPO"
    offline=0
fi
# The project's wheel goes in its own layer (see the Dockerfile).
mv "$BUILD"/wheelhouse/clip_search-*.whl "$BUILD/project/"
"$PYTHON" - "$BUILD"/project/clip_search-*.whl > "$BUILD/requirements.txt" <<'PY'
import sys, zipfile
from email.parser import Parser
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(name).decode())
for requirement in metadata.get_all("Requires-Dist") or []:
    if "extra ==" not in requirement:  # the image serves: core requirements only
        print(requirement)
PY

# --network host: this machine's dockerd runs with --bridge=none; apt inside the build needs a network.
"$DOCKER" build --network host "${NO_CACHE[@]}" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg OFFLINE="$offline" \
    --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
    -t "$TAG" -f "$HERE/Dockerfile" "$HERE"
echo "built $TAG: $("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')"

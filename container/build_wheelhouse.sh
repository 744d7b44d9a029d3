#!/usr/bin/env bash
# Build, on the host, every wheel the serving image needs, so `docker build` installs with
# `pip install --no-index` (no TLS/CA set-up inside the build, no multi-GB CUDA torch, air-gapped).
#
# Usage: container/build_wheelhouse.sh [OUT_DIR] [EXTRAS]
#   OUT_DIR  default container/.build/wheelhouse
#   EXTRAS   the project's extras to include, comma-separated (default "serve": the slim image;
#            the full image passes "serve,package,openvino")
# Env:   PYTHON            host Python 3.11 with pip (default: python3); its minor version must
#                          match the image's python3 (Debian bookworm: 3.11)
#        TORCH_FIND_LINKS  where the CPU torch wheel lies (default /opt/wheels)
#        TORCH_INDEX_URL   optional extra index with CPU torch (e.g. https://download.pytorch.org/whl/cpu)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
OUT="${1:-$HERE/.build/wheelhouse}"
EXTRAS="${2:-serve}"
PYTHON="${PYTHON:-python3}"
TORCH_FIND_LINKS="${TORCH_FIND_LINKS:-/opt/wheels}"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The CPU build only: "+cpu" is a local version label, so this pin can never resolve to the CUDA
# wheel (which drags in ~3 GB of nvidia-* wheels). Harmless when no extra asks for torch.
echo "torch==2.13.0+cpu" > "$WORK/cpu-torch.txt"

extra=()
[[ -d "$TORCH_FIND_LINKS" ]] && extra+=(--find-links "$TORCH_FIND_LINKS")
[[ -n "${TORCH_INDEX_URL:-}" ]] && extra+=(--extra-index-url "$TORCH_INDEX_URL")

# Build the project's own wheel from a copy of the sources, so the work tree gets no build/ dir.
# Without byte code: scripts/run_tests.sh builds the image while the tests run, and Python writes
# __pycache__ files meanwhile (tar fails on a file that changes or vanishes as it reads).
mkdir -p "$WORK/src"
tar -C "$REPO" --exclude=__pycache__ -c setup.py README.md constraints.txt code model_build infra 2>/dev/null \
    | tar -C "$WORK/src" -x

# Wheels for the project and its run-time closure (core + EXTRAS). sdists among them are built
# into wheels here, so the image needs no compiler.
"$PYTHON" -m pip wheel --quiet --wheel-dir "$OUT" \
    -c "$REPO/constraints.txt" -c "$WORK/cpu-torch.txt" "${extra[@]}" "$WORK/src[$EXTRAS]" \
    2> >(grep -v "^WARNING: Location 'file:" >&2)

if ls "$OUT" | grep -Eiq '^(nvidia_|triton-)'; then
    echo "error: CUDA wheels in $OUT:" >&2
    ls "$OUT" | grep -Ei '^(nvidia_|triton-)' >&2
    exit 1
fi
if [[ ",$EXTRAS," == *,package,* ]]; then
    ls "$OUT"/torch-2.13.0+cpu-*.whl >/dev/null
elif ls "$OUT" | grep -q '^torch-'; then
    echo "error: torch in a wheelhouse without the package extra ($EXTRAS)" >&2
    exit 1
fi
echo "wheelhouse [$EXTRAS]: $OUT ($(ls "$OUT" | wc -l) wheels, $(du -sh "$OUT" | cut -f1))"

#!/usr/bin/env bash
# Build the clip-search serving image.
#
# Usage: container/build.sh [--variant slim|full] [--offline|--online] [--tag TAG] [--base-image IMAGE]
#   --variant slim (default)  torch-free: core + the `serve` extra (ONNX Runtime, multi-model-server,
#                        sagemaker-inference) + a minimal Java runtime. Serves onnx / onnx-int8
#                        artifacts; given a torch (or OpenVINO) artifact it exits at start with a
#                        MODEL LOAD FAILED line that says to use --variant full.
#   --variant full       core + serve + package + openvino (torch CPU, open_clip, OpenVINO):
#                        serves every runtime, torch artifacts included (the pre-slim image)
#   --variant lambda     the query function for AWS Lambda (container/Dockerfile.lambda): core + the
#                        `lambda` extra (app + opensearch + awslambdaric); no torch, no Java
#   --variant processing the pipelines' processing steps (container/Dockerfile.processing): one layer
#                        on the serving image (--serving-image) adding LanceDB/Arrow and opensearch-py
#   --offline (default)  build the wheelhouse on the host (build_wheelhouse.sh) and install only
#                        from it inside the build: no PyPI, no CA set-up, works air-gapped.
#   --online             install from PyPI inside the build, CPU torch from --torch-index-url
#                        (default https://download.pytorch.org/whl/cpu); the project wheel still
#                        comes from the host.
#   --tag TAG            image tag (default clip-search:latest for slim, clip-search:full for full)
#   --no-cache           do not reuse Docker's build cache
#   --serving-image TAG  the image the processing variant extends (default clip-search:latest)
#   --base-image IMAGE   Debian bookworm base (default debian:bookworm-slim; on a machine with no
#                        registry, run container/make_base_image.sh and pass local/debian:bookworm)
# Env: DOCKER (default /usr/bin/docker), PYTHON (host python for the wheelhouse, default python3).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
DOCKER="${DOCKER:-/usr/bin/docker}"
PYTHON="${PYTHON:-python3}"
MODE=offline
VARIANT=slim
TAG=
BASE_IMAGE=debian:bookworm-slim
TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
SERVING_IMAGE=clip-search:latest
NO_CACHE=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --variant) VARIANT="$2"; shift ;;
        --variant=*) VARIANT="${1#--variant=}" ;;
        --offline) MODE=offline ;;
        --online) MODE=online ;;
        --tag) TAG="$2"; shift ;;
        --base-image) BASE_IMAGE="$2"; shift ;;
        --serving-image) SERVING_IMAGE="$2"; shift ;;
        --torch-index-url) TORCH_INDEX_URL="$2"; shift ;;
        --no-cache) NO_CACHE=(--no-cache) ;;
        -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
case "$VARIANT" in
    slim) EXTRAS=serve; TAG="${TAG:-clip-search:latest}" ;;
    full) EXTRAS=serve,package,openvino; TAG="${TAG:-clip-search:full}" ;;
    lambda) EXTRAS=lambda; TAG="${TAG:-clip-search:lambda}" ;;
    processing) EXTRAS=serve,opensearch; TAG="${TAG:-clip-search:processing}" ;;
    *) echo "unknown --variant: $VARIANT (slim, full, lambda or processing)" >&2; exit 2 ;;
esac

BUILD="$HERE/.build/$VARIANT"
rm -rf "$BUILD/wheelhouse" "$BUILD/project" "$BUILD/missing"
mkdir -p "$BUILD/wheelhouse" "$BUILD/project"
cp "$REPO/constraints.txt" "$BUILD/constraints.txt"

started=$SECONDS
if [[ "$MODE" == offline ]]; then
    PYTHON="$PYTHON" "$HERE/build_wheelhouse.sh" "$BUILD/wheelhouse" "$EXTRAS"
    offline=1
else
    # Only the project's own wheel; everything else comes from the indexes inside the build.
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$BUILD/wheelhouse" "$REPO"
    offline=0
fi
wheelhouse_s=$((SECONDS - started))
if [[ "$VARIANT" == processing ]]; then
    # Stage only the wheels the serving image lacks (by distribution name; the project is in it).
    "$DOCKER" image inspect "$SERVING_IMAGE" >/dev/null 2>&1 \
        || { echo "serving image $SERVING_IMAGE not built: build it first (--variant slim)" >&2; exit 1; }
    installed="$("$DOCKER" run --rm --entrypoint /opt/venv/bin/python "$SERVING_IMAGE" -m pip list --format=freeze \
                 | cut -d= -f1 | tr 'A-Z_.' 'a-z--')"
    mkdir -p "$BUILD/missing"
    for wheel in "$BUILD"/wheelhouse/*.whl; do
        name="$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')"
        grep -qx "$name" <<<"$installed" || mv "$wheel" "$BUILD/missing/"
    done
    rm -rf "$BUILD/wheelhouse" && mv "$BUILD/missing" "$BUILD/wheelhouse"
    echo "processing: $(ls "$BUILD/wheelhouse" | wc -l) wheels the serving image lacks: $(ls "$BUILD/wheelhouse" | cut -d- -f1 | xargs)"
    started=$SECONDS
    "$DOCKER" build "${NO_CACHE[@]}" --build-arg SERVING_IMAGE="$SERVING_IMAGE" \
        -t "$TAG" -f "$HERE/Dockerfile.processing" "$HERE"
    echo "built $TAG (processing on $SERVING_IMAGE): $("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')" \
         "(wheelhouse ${wheelhouse_s} s, docker build $((SECONDS - started)) s)"
    exit 0
fi
# The project's wheel goes in its own layer (see the Dockerfile).
mv "$BUILD"/wheelhouse/clip_search-*.whl "$BUILD/project/"
# The image's requirements: the wheel's Requires-Dist for core + this variant's extras, less the
# embedded index's packages. The image encodes (/invocations); it never opens an index, so LanceDB
# and Arrow (~370 MB installed, more than half the slim image) stay out. clip_search.search.index
# imports them only when an index is opened; tests/container/test_image.py checks they are absent.
NOT_SERVED="lancedb pyarrow filelock"
# The query function encodes through the SageMaker endpoint: no in-process model runtime or tokenizer.
[[ "$VARIANT" == lambda ]] && NOT_SERVED="$NOT_SERVED onnxruntime tokenizers"
"$PYTHON" - "$BUILD"/project/clip_search-*.whl "$EXTRAS" "$NOT_SERVED" > "$BUILD/requirements.txt" <<'PY'
import sys, zipfile
from email.parser import Parser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(name).decode())
extras = [""] + sys.argv[2].split(",")
not_served = {canonicalize_name(n) for n in sys.argv[3].split()}
for line in metadata.get_all("Requires-Dist") or []:
    requirement = Requirement(line)
    if canonicalize_name(requirement.name) in not_served:
        continue
    if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras):
        requirement.marker = None
        print(requirement)
PY

started=$SECONDS
# --network host: this machine's dockerd runs with --bridge=none; apt inside the build needs a network.
"$DOCKER" build --network host "${NO_CACHE[@]}" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg OFFLINE="$offline" \
    --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
    --build-arg VARIANT="$VARIANT" \
    -t "$TAG" -f "$HERE/$([[ "$VARIANT" == lambda ]] && echo Dockerfile.lambda || echo Dockerfile)" "$HERE"
echo "built $TAG ($VARIANT): $("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')" \
     "(wheelhouse ${wheelhouse_s} s, docker build $((SECONDS - started)) s)"

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
        --serving-image=*) SERVING_IMAGE="${1#--serving-image=}" ;;
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

if [[ "$VARIANT" == processing ]]; then
    # Only the wheels the serving image lacks: the index packages of core (LanceDB, Arrow) and the
    # opensearch extra, at the requirements of the clip-search installed in it. Taken from the other
    # variants' wheelhouses where they are (no second full wheelhouse), else from the index.
    "$DOCKER" image inspect "$SERVING_IMAGE" >/dev/null 2>&1 \
        || { echo "serving image $SERVING_IMAGE not built: build it first (--variant slim or full)" >&2; exit 1; }
    started=$SECONDS
    "$DOCKER" run --rm --entrypoint /opt/venv/bin/python "$SERVING_IMAGE" -c '
import importlib.metadata as m
print("\n".join(d.metadata["Name"] for d in m.distributions()))
print("--")
print("\n".join(m.requires("clip-search") or []))' > "$BUILD/serving-image.txt"
    "$PYTHON" - "$BUILD/serving-image.txt" > "$BUILD/requirements.txt" <<'PY'
import sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
installed, _, requires = open(sys.argv[1]).read().partition("--\n")
installed = {canonicalize_name(n) for n in installed.split()}
for line in requires.splitlines():
    requirement = Requirement(line)
    if canonicalize_name(requirement.name) in installed:
        continue
    if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in ("", "opensearch")):
        requirement.marker = None
        print(requirement)
PY
    links=()
    for other in "$HERE"/.build/*/wheelhouse; do
        [[ "$other" != "$BUILD/wheelhouse" ]] && links+=(--find-links "$other")
    done
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$BUILD/missing" "${links[@]}" -c "$REPO/constraints.txt" \
        -r "$BUILD/requirements.txt" 2> >(grep -v "^WARNING: Location 'file:" >&2)
    "$PYTHON" - "$BUILD/serving-image.txt" "$BUILD/missing" "$BUILD/wheelhouse" <<'PY'
import sys
from pathlib import Path
from packaging.utils import canonicalize_name, parse_wheel_filename
installed = {canonicalize_name(n) for n in open(sys.argv[1]).read().partition("--")[0].split()}
for wheel in Path(sys.argv[2]).glob("*.whl"):
    if parse_wheel_filename(wheel.name)[0] not in installed:
        wheel.rename(Path(sys.argv[3]) / wheel.name)
PY
    rm -rf "$BUILD/missing"
    wheelhouse_s=$((SECONDS - started))
    echo "processing: $(ls "$BUILD/wheelhouse" | wc -l) wheels the serving image lacks:" \
         "$(ls "$BUILD/wheelhouse" | cut -d- -f1 | xargs)"
    started=$SECONDS
    "$DOCKER" build "${NO_CACHE[@]}" --build-arg SERVING_IMAGE="$SERVING_IMAGE" \
        -t "$TAG" -f "$HERE/Dockerfile.processing" "$BUILD"
    echo "built $TAG (processing on $SERVING_IMAGE): $("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')" \
         "(wheelhouse ${wheelhouse_s} s, docker build $((SECONDS - started)) s)"
    exit 0
fi

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

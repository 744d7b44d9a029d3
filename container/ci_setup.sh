#!/usr/bin/env bash
# Everything CI needs for the container and SageMaker local-mode suites, from a bare machine:
#   1. apt: docker.io, docker-compose (local mode), debootstrap (base image), docker-registry
#      (a real local registry for the publish image step's push)
#   2. dockerd (reused if /var/run/docker.sock already answers)
#   3. the Debian base image, made locally (no registry reachable): make_base_image.sh
#   4. the host wheelhouse + the image: build.sh --offline --variant VARIANT (slim: also the lambda
#      image), and the processing image, one layer on it (build.sh --variant processing)
#   5. pytest -m "container or local_mode" tests/container tests/local_mode
# Usage: PYTHON=/path/to/venv/bin/python container/ci_setup.sh [--no-tests] [--cached] [--variant slim|full]
#   --no-tests  stop after building the image
#   --variant   which image to build and test (default slim, the one SageMaker runs by default;
#               full = torch + OpenVINO, tagged clip-search:full unless CLIP_SEARCH_IMAGE is set)
#   --cached    reuse an existing base image and Docker's build cache (default: make the base
#               image anew, so no cached layer can match and CI proves the images build from nothing)
# Env: PYTHON (the project's venv interpreter, default python3), CLIP_SEARCH_IMAGE (tag, default
#      clip-search:latest for slim, clip-search:full for full), CLIP_SEARCH_PROCESSING_IMAGE (default
#      clip-search:processing), DOCKER (default /usr/bin/docker).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export DOCKER="${DOCKER:-/usr/bin/docker}"
export PYTHON="${PYTHON:-python3}"
BASE_IMAGE=local/debian:bookworm
RUN_TESTS=1
CACHED=0
VARIANT=slim
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-tests) RUN_TESTS=0 ;;
        --cached) CACHED=1 ;;
        --variant) VARIANT="$2"; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ "$VARIANT" == full ]]; then
    export CLIP_SEARCH_IMAGE="${CLIP_SEARCH_IMAGE:-clip-search:full}"
else
    export CLIP_SEARCH_IMAGE="${CLIP_SEARCH_IMAGE:-clip-search:latest}"
fi

step_start=0
step() { step_start=$SECONDS; echo "=== [container ci] $*"; }
done_step() { echo "=== [container ci] done in $((SECONDS - step_start)) s"; }

step "install docker.io, docker-compose, debootstrap, docker-registry"
if ! { [[ -x "$DOCKER" ]] && command -v dockerd >/dev/null && command -v docker-compose >/dev/null \
       && command -v debootstrap >/dev/null && [[ -x /usr/bin/docker-registry ]]; }; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap \
        docker-registry >/dev/null
fi
done_step

step "start dockerd"
if ! "$DOCKER" info >/dev/null 2>&1; then
    # No iptables/default bridge here: containers use user-defined bridge networks (docker-proxy
    # publishes their ports on loopback) or --network host. Both are what the tests use.
    # setsid: its own session, so it outlives this script's process group (scripts/run_tests.sh runs
    # this in the background and stops that group if an earlier tier fails).
    setsid nohup dockerd --iptables=false --bridge=none >/tmp/clip-search-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER" info >/dev/null 2>&1 || { tail -20 /tmp/clip-search-dockerd.log; exit 1; }
fi
done_step

step "make base image $BASE_IMAGE"
# Without --cached the base image is made anew: no layer of an earlier build can match it, so every
# image builds from nothing, and the lambda build reuses the apt layers the slim build just made.
build_flags=()
force=0
if [[ "$CACHED" == 0 ]]; then
    force=1
fi
FORCE=$force "$HERE/make_base_image.sh" "$BASE_IMAGE"
done_step

step "build wheelhouse and $VARIANT image $CLIP_SEARCH_IMAGE"
"$HERE/build.sh" --offline --variant "$VARIANT" --base-image "$BASE_IMAGE" --tag "$CLIP_SEARCH_IMAGE" "${build_flags[@]}" \
    > /tmp/clip-search-image-build.log 2>&1 || { tail -40 /tmp/clip-search-image-build.log; exit 1; }
tail -n1 /tmp/clip-search-image-build.log
done_step

if [[ "$VARIANT" == slim ]]; then
    # The query function's image (tests/container/test_lambda_image.py), on the same base and wheelhouse.
    export CLIP_SEARCH_LAMBDA_IMAGE="${CLIP_SEARCH_LAMBDA_IMAGE:-clip-search:lambda}"
    step "build lambda image $CLIP_SEARCH_LAMBDA_IMAGE"
    "$HERE/build.sh" --offline --variant lambda --base-image "$BASE_IMAGE" --tag "$CLIP_SEARCH_LAMBDA_IMAGE" "${build_flags[@]}" \
        > /tmp/clip-search-lambda-build.log 2>&1 || { tail -40 /tmp/clip-search-lambda-build.log; exit 1; }
    tail -n1 /tmp/clip-search-lambda-build.log
    done_step
fi

# The pipelines' processing steps (tests/local_mode/test_local_pipelines.py): one layer on the
# serving image just built (either variant), adding LanceDB/Arrow and opensearch-py.
export CLIP_SEARCH_PROCESSING_IMAGE="${CLIP_SEARCH_PROCESSING_IMAGE:-clip-search:processing}"
step "build processing image $CLIP_SEARCH_PROCESSING_IMAGE"
"$HERE/build.sh" --offline --variant processing --serving-image "$CLIP_SEARCH_IMAGE" \
    --tag "$CLIP_SEARCH_PROCESSING_IMAGE" "${build_flags[@]}" \
    > /tmp/clip-search-processing-build.log 2>&1 || { tail -40 /tmp/clip-search-processing-build.log; exit 1; }
tail -n1 /tmp/clip-search-processing-build.log
done_step

if [[ "$RUN_TESTS" == 1 ]]; then
    step "container and local-mode suites"
    cd "$REPO"
    "$PYTHON" -m pytest -m "container or local_mode" tests/container tests/local_mode -p no:cacheprovider
    done_step
fi

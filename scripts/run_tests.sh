#!/usr/bin/env bash
# Runs the test tiers in order, fastest first, and stops at the first failing tier.
#   unit       in-process tests: handler contract, artifact, encoder, runtimes, search, publishing
#   fuzz       Hypothesis: random input at the decoder, the real server and the catalogue readers
#   server     the real multi-model-server natively (Java + Python workers)
#   browser    the search page in headless Chromium (Debian's chromium + chromium-driver, Selenium)
#   container  Docker image build + the same HTTP suite against it + SageMaker local mode
# With no argument, all tiers run. Services the tiers need are started here, not by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTEST=("$VENV/bin/python" -m pytest -p no:cacheprovider)
tiers=("${@:-unit fuzz server browser container}")
read -r -a tiers <<< "${tiers[*]}"

run_tier() {
  local name=$1; shift
  echo "=== tier: $name ($(date -u +%H:%M:%S))"
  local start=$SECONDS
  "${PYTEST[@]}" "$@"
  echo "=== tier $name passed in $((SECONDS - start)) s"
}

# unit and server run under coverage.py (.coveragerc: branch coverage of code/clip_search, worker
# subprocesses included); the coverage step after the tiers prints it and fails below the threshold.
export COVERAGE_FILE="$PWD/build/coverage/data"
covered=0
run_covered_tier() {
  local -a PYTEST=("$VENV/bin/python" -m coverage run --rcfile=.coveragerc -m pytest -p no:cacheprovider)
  [ "$covered" = 1 ] || { rm -rf build/coverage; mkdir -p build/coverage; covered=1; }
  run_tier "$@"
}

for tier in "${tiers[@]}"; do
  case "$tier" in
    unit) run_covered_tier unit -m "not server and not browser and not container and not local_mode and not live and not fuzz" ;;
    fuzz) run_tier fuzz -m "fuzz" ;;
    server) run_covered_tier server -m "server" ;;
    browser)
      # Debian's chromium + chromium-driver (apt, when missing) and selenium; no browser download.
      VENV="$VENV" bash scripts/install_browser.sh
      CLIP_SEARCH_ARTIFACTS=${CLIP_SEARCH_ARTIFACTS:-test-artifacts} run_tier browser -m "browser" ;;
    container)
      # Docker engine, a locally made base image, the image itself (container/ci_setup.sh), then
      # every container-marked test: the HTTP suite against the image, local mode, the ECR push.
      PYTHON="$VENV/bin/python" bash container/ci_setup.sh --no-tests
      run_tier container -m "container or local_mode" ;;
    *) echo "unknown tier: $tier (unit, fuzz, server, browser, container)" >&2; exit 2 ;;
  esac
done

if [ "$covered" = 1 ]; then
  echo "=== coverage (branch) of the library over: ${tiers[*]}"
  "$VENV/bin/python" -m coverage combine --rcfile=.coveragerc --quiet
  "$VENV/bin/python" -m coverage report --rcfile=.coveragerc > build/coverage/report.txt || status=$?
  head -n 17 build/coverage/report.txt; grep -E '^TOTAL' build/coverage/report.txt
  echo "(the 15 least-covered modules first; full report: build/coverage/report.txt)"
  if [ "${status:-0}" != 0 ]; then grep -E 'Coverage failure' build/coverage/report.txt >&2; exit "$status"; fi
fi

#!/usr/bin/env bash
# Runs the test tiers in order, fastest first, and stops at the first failing tier (the browser tier
# runs beside the fuzz tier when both are asked for).
#   lint       ruff check . (ruff.toml: pyflakes, bugbear, import sorting)
#   unit       in-process tests: handler contract, artifact, encoder, runtimes, search, publishing
#   fuzz       Hypothesis: random input at the decoder, the real server and the catalogue readers
#   server     the real multi-model-server natively (Java + Python workers)
#   browser    the search page in headless Chromium (Debian's chromium + chromium-driver, Selenium)
#   container  Docker image build + the same HTTP suite against it + SageMaker local mode
# With no argument, all tiers run. Services the tiers need are started here, not by hand.
# Env: TEST_WORKERS  pytest-xdist workers for the unit, fuzz and server tiers (default: the CPU count)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# Python writes a module's byte code on its first import and every later process reuses it. An
# environment that sets PYTHONDONTWRITEBYTECODE (these machines' does) makes every test process and
# every subprocess compile torch, the AWS SDKs and LanceDB from source again: ~40% of an import's CPU.
unset PYTHONDONTWRITEBYTECODE
PYTEST=("$VENV/bin/python" -m pytest -p no:cacheprovider)
tiers=("${@:-lint unit fuzz server browser container}")
read -r -a tiers <<< "${tiers[*]}"
# Every core: the unit tier is CPU-bound (model exports, encoding, LanceDB); the server tier mostly
# waits on JVM and worker start-up. Tests are xdist-safe (tmp_path, free ports, a moto / PostgreSQL per
# worker); the packaged test models are built once per session and shared (tests/session_cache.py).
WORKERS=${TEST_WORKERS:-$(nproc)}
# loadscope: each test module (or class) goes to one worker whole, so a module-scoped fixture (the
# benchmark run of tests/server/test_benchmarks_smoke.py, a model server with its own limits) is set
# up once, not once per worker. (loadgroup would spread tests one by one, but pytest-xdist 3.8 cannot
# group under pytest 9: it renames `item._nodeid`, which pytest 9 no longer reads.)
XDIST=(-n "$WORKERS" --dist loadscope)
# The unit tier takes one worker more than the cores: its tests wait a third of their time (writer
# processes, moto and PostgreSQL start-up, LanceDB commits).
UNIT_XDIST=(-n "${TEST_WORKERS:-$(( $(nproc) + 1 ))}" --dist loadscope)
tier_times=()
# What the tests package once (the test models, their exports: tests/session_cache.py) is shared by
# every tier of this run, and only of this run.
export CLIP_SEARCH_TEST_BUILDS="$PWD/build/test-builds"
rm -rf "$CLIP_SEARCH_TEST_BUILDS"

# A pytest run beside the current tier: in the background, its output in LOG, shown when waited for.
start_beside() {
  local log=$1; shift
  mkdir -p "$(dirname "$log")"
  "${PYTEST[@]}" "$@" > "$log" 2>&1 &
  beside_pid=$!
}
wait_beside() {  # NAME LOG: its exit status, after its log's last lines
  local status=0
  wait "$beside_pid" || status=$?
  echo "=== $1 ($2):"
  grep -vE '^\s*$' "$2" | tail -n 40
  return "$status"
}

run_tier() {
  local name=$1; shift
  echo "=== tier: $name ($(date -u +%H:%M:%S))"
  local start=$SECONDS
  "${PYTEST[@]}" "$@" || return $?
  tier_times+=("$name $((SECONDS - start)) s")
  echo "=== tier $name passed in $((SECONDS - start)) s"
}

# unit and server run under coverage.py (.coveragerc: branch coverage of code/clip_search, in the
# xdist workers and every process they start); the coverage step after the tiers prints it and
# fails below the threshold.
export COVERAGE_FILE="$PWD/build/coverage/data"
covered=0
run_covered_tier() {
  local -a PYTEST=("$VENV/bin/python" -m coverage run --rcfile=.coveragerc -m pytest -p no:cacheprovider)
  [ "$covered" = 1 ] || { rm -rf build/coverage; mkdir -p build/coverage; covered=1; }
  run_tier "$@"
}

# The browser tier's apt install (when chromium is missing) goes first, so it never waits on the
# container set-up's apt below.
if [[ " ${tiers[*]} " == *" browser "* ]]; then
  # Debian's chromium + chromium-driver (apt, when missing) and selenium; no browser download.
  VENV="$VENV" bash scripts/install_browser.sh
fi

# The container tier's set-up (apt, dockerd, the base image from debootstrap, the wheelhouse, the
# images on that new base) needs nothing the other tiers make: it starts now, in the background, in
# its own process group (stopped with the run), and the container tier waits for it. Its log:
# build/container-setup.log. At normal priority, like the dockerd it starts: it is serial work (one
# core at most), and overlapped with the CPU-bound tiers it costs them about half its CPU time,
# while held back until the container tier it would run alone with the other core idle.
setup_pid=
if [[ " ${tiers[*]} " == *" container "* ]]; then
  mkdir -p build
  echo "=== container set-up started in the background ($(date -u +%H:%M:%S)): build/container-setup.log"
  PYTHON="$VENV/bin/python" setsid bash container/ci_setup.sh --no-tests > build/container-setup.log 2>&1 &
  setup_pid=$!
  trap '[ -z "$setup_pid" ] || kill -- "-$setup_pid" 2>/dev/null || true' EXIT
fi

for tier in "${tiers[@]}"; do
  case "$tier" in
    lint)
      echo "=== tier: lint ($(date -u +%H:%M:%S))"
      start=$SECONDS
      "$VENV/bin/ruff" check .
      tier_times+=("lint $((SECONDS - start)) s") ;;
    unit) run_covered_tier unit "${UNIT_XDIST[@]}" -m "not server and not browser and not container and not local_mode and not live and not fuzz" ;;
    fuzz)
      browser_beside=
      if [[ " ${tiers[*]} " == *" browser "* ]]; then
        # The browser tier runs beside this one: Hypothesis keeps both cores busy for ~20 s, the page
        # tests mostly wait on Chromium.
        browser_beside=1
        browser_start=$SECONDS
        echo "=== tier: browser, beside fuzz ($(date -u +%H:%M:%S)): build/browser.log"
        start_beside build/browser.log -m "browser"
      fi
      fuzz_status=0
      run_tier fuzz "${XDIST[@]}" -m "fuzz" || fuzz_status=$?
      if [ -n "$browser_beside" ]; then
        wait_beside "tier browser" build/browser.log || { echo "=== tier browser FAILED" >&2; exit 1; }
        tier_times+=("browser $((SECONDS - browser_start)) s (beside fuzz)")
        echo "=== tier browser passed in $((SECONDS - browser_start)) s"
      fi
      [ "$fuzz_status" = 0 ] || exit "$fuzz_status" ;;
    server) run_covered_tier server "${XDIST[@]}" -m "server" ;;
    browser)
      [ -n "${browser_beside:-}" ] || run_tier browser -m "browser" ;;
    container)
      # Docker engine, a locally made base image, the image itself (container/ci_setup.sh), then
      # every container-marked test: the HTTP suite against the image, local mode, the ECR push.
      start=$SECONDS
      if [ -n "$setup_pid" ]; then
        echo "=== waiting for the container set-up ($(date -u +%H:%M:%S))"
        wait "$setup_pid" || { status=$?; tail -n 60 build/container-setup.log >&2; exit "$status"; }
        setup_pid=
        grep -E '^=== \[container ci\]|^built ' build/container-setup.log
      else
        PYTHON="$VENV/bin/python" bash container/ci_setup.sh --no-tests
      fi
      echo "=== container set-up waited for $((SECONDS - start)) s"
      # Local mode runs in a pytest of its own beside the rest of the tier, which runs on two xdist
      # workers: both mostly wait on containers and on pip (the buildspec's fresh-venv install alone
      # is ~60 s on one core). Local mode stays in one process (its tests clean up the SDK's compose
      # containers by image, and share the SDK's network).
      echo "=== tier: container ($(date -u +%H:%M:%S)), SageMaker local mode beside it: build/container-local-mode.log"
      start_beside build/container-local-mode.log -m "container or local_mode" tests/local_mode
      rest_status=0
      "${PYTEST[@]}" -n 2 --dist loadscope -m "container or local_mode" --ignore=tests/local_mode || rest_status=$?
      local_status=0
      wait_beside "local mode" build/container-local-mode.log || local_status=$?
      if [ "$rest_status" != 0 ] || [ "$local_status" != 0 ]; then
        echo "=== tier container FAILED (rest: exit $rest_status, local mode: exit $local_status)" >&2; exit 1
      fi
      tier_times+=("container $((SECONDS - start)) s")
      echo "=== tier container passed in $((SECONDS - start)) s" ;;
    *) echo "unknown tier: $tier (lint, unit, fuzz, server, browser, container)" >&2; exit 2 ;;
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
echo "=== tier times: $(IFS=','; echo "${tier_times[*]}" | sed 's/,/, /g')"

#!/usr/bin/env bash
# Mutation testing of the run-time core (`make mutants`; not in CI: run it before a release).
# mutmut (pinned in constraints.txt, `dev` extra) applies one small bug at a time to the modules
# below and runs the fast tests that reach the mutated function; a mutant no test fails "survives".
# mutmut derives module names from paths under ./ or src/, so it runs in a scratch copy of the tree
# with code/ as src/ (build/mutants/, gitignored). Report: build/mutants-report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
VENV=$(cd "$VENV" && pwd)
REPO=$(pwd)
WORK=build/mutants
CORE=(serving/decoder.py serving/serializer.py serving/batch.py content_types.py
      artifact.py search/scores.py search/filters.py)
TESTS=(tests/unit/test_serving_mutants.py tests/unit/test_artifact_mutants.py
       tests/unit/test_filters_mutants.py tests/search/test_scores.py)

rm -rf "$WORK" && mkdir -p "$WORK"
cp -r code "$WORK/src"
cp -r tests "$WORK/tests"
cp pytest.ini "$WORK/"
{
  echo "[mutmut]"
  echo "source_paths = src"
  printf 'only_mutate =\n'; for f in "${CORE[@]}"; do echo "    src/clip_search/$f"; done
  printf 'pytest_add_cli_args_test_selection =\n'; for t in "${TESTS[@]}"; do echo "    $t"; done
  printf 'pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n'
} > "$WORK/setup.cfg"
cd "$WORK"
export CLIP_SEARCH_GROCERY_DIR=${CLIP_SEARCH_GROCERY_DIR:-$REPO/../shared/datasets/grocery-store}
# mutmut puts mutants/src first on sys.path; nothing else may provide clip_search.
export PYTHONPATH="$PWD"
"$VENV/bin/mutmut" run --max-children "${MUTANTS_JOBS:-2}" || true
"$VENV/bin/mutmut" results --all true > "$REPO/build/mutants-all.txt" || true
# The report: every surviving mutant with its diff.
"$VENV/bin/mutmut" results > "$REPO/build/mutants-survivors.txt" || true
: > "$REPO/build/mutants-report.txt"
while read -r name _; do
  "$VENV/bin/mutmut" show "${name%:}" >> "$REPO/build/mutants-report.txt" 2>&1 || true
done < "$REPO/build/mutants-survivors.txt"
"$VENV/bin/python" - "$REPO/build/mutants-all.txt" <<'PY'
import collections, sys
counts = collections.Counter(line.rsplit(":", 1)[1].strip() for line in open(sys.argv[1]) if ":" in line)
total = sum(counts.values())
survived = counts.get("survived", 0) + counts.get("no tests", 0)
print("mutants:", dict(counts))
print(f"surviving (survived + no tests): {survived} of {total} = {100 * survived / max(total, 1):.1f}%")
PY
echo "surviving mutants: build/mutants-report.txt (show one: cd $WORK && mutmut show NAME)"

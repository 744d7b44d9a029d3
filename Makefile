# One command each for a fresh machine: `make demo` (the main job) and `make test` (everything CI runs).
PYTHON ?= python3
# Byte code is written on first import and reused (see scripts/run_tests.sh): not when the
# environment says PYTHONDONTWRITEBYTECODE, which would recompile every import of every process.
unexport PYTHONDONTWRITEBYTECODE
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/python -m pytest

.PHONY: install demo lint test test-unit test-server test-browser test-container test-live mutants clean

# The venv is rebuilt when the dependency pins change. torch==2.13.0 is the CPU build (setup.py).
# --no-compile: Python writes the byte code of the modules it imports on first import; compiling every
# installed file up front (torch, scipy, the AWS SDKs, ...) costs CI CPU time for files never run.
$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e '.[all,test]'
	touch $@

install: $(VENV)/.installed

# checkov (the template checks of tests/infra) pins an old boto3, so it gets an environment of its own.
CHECKOV_VENV ?= build/checkov
$(CHECKOV_VENV)/.installed: infra/requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile -r infra/requirements-checkov.txt
	touch $@
export CHECKOV ?= $(abspath $(CHECKOV_VENV))/bin/checkov

# The demo's image queries use the Grocery Store Dataset's store photos when they are beside the repo.
CLIP_SEARCH_GROCERY_DIR ?= $(abspath ../shared/datasets/grocery-store)
export CLIP_SEARCH_GROCERY_DIR

demo: install
	$(BIN)/clip-search demo

# ruff first, fast unit tests next (on every core), then the real server, the page in Chromium, then
# the container and SageMaker local mode; the image builds in the background meanwhile (docs/testing.md).
# The two environments install side by side (pip keeps one core busy): ~25 s of a clean run.
test:
	$(MAKE) --no-print-directory -j2 install $(CHECKOV_VENV)/.installed
	bash scripts/run_tests.sh

lint: install
	bash scripts/run_tests.sh lint

test-unit: install $(CHECKOV_VENV)/.installed
	bash scripts/run_tests.sh unit

test-server: install
	bash scripts/run_tests.sh server

test-browser: install
	bash scripts/run_tests.sh browser

test-container: install
	bash scripts/run_tests.sh container

# Every OpenSearch test that can run against a real cluster, domain or Serverless collection (not
# part of `make test`): OPENSEARCH_URL=https://host:9200 make test-live (auth from the environment).
test-live: install
	@test -n "$$OPENSEARCH_URL" || { echo "make test-live: set OPENSEARCH_URL=https://host:9200 (and OPENSEARCH_USERNAME/OPENSEARCH_PASSWORD or AWS credentials)" >&2; exit 2; }
	$(PYTEST) -p no:cacheprovider -m live tests/search

# Mutation testing of the run-time core with the fast tests (not in CI; see docs/testing.md).
# Surviving mutants, with their diffs: build/mutants-report.txt.
mutants: install
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	VENV=$(VENV) nice bash scripts/mutants.sh

clean:
	rm -rf $(VENV) .pytest_cache

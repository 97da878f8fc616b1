# One task runner. Every target creates .venv when it is missing and installs the project into it: the demo what
# gpuledger needs to run, the other targets the dev tools too.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/gpuledger demo $(DEMO_ARGS)

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo-warehouse bench/results .pytest_cache .mypy_cache .ruff_cache

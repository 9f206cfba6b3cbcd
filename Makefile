# Marketplace: every command needs only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser run test test-unit test-integration test-e2e lint verify docs schemas bench chaos cold-start demo consistency manifests migrate dead-letters redrive compose-env clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[local,dev]'
	touch $(STAMP)

run: install
	$(BIN)/python -m local.stack.run

# Debian's Chromium, for the test that opens the API page (tests/e2e/test_api_page.py):
# playwright drives it, and never downloads a browser of its own.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

test: install browser
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install
	$(BIN)/python -m pytest tests/integration

test-e2e: install
	$(BIN)/python -m pytest tests/e2e

# The saga, model-checked (tests/verify): explores for VERIFY_SECONDS; VERIFY_SEED replays one.
verify: install
	VERIFY_SECONDS=$${VERIFY_SECONDS:-300} $(BIN)/python -m pytest tests/verify -p no:cacheprovider -q --show-capture=no

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy shared functions local

# The documentation site (docs/mkdocs.yml), built strictly into .local/site: a broken
# link, a missing anchor or a page left out of the nav fails it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --config-file docs/mkdocs.yml

schemas: install
	$(BIN)/python -m shared.domain.schemas --write
	$(BIN)/python -m functions.api_docs --write

bench: install
	$(BIN)/python -m local.measure.bench $(BENCH_ARGS)

chaos: install
	$(BIN)/python -m local.chaos $(CHAOS_ARGS)

cold-start: install
	$(BIN)/python -m local.measure.coldstart $(COLD_START_ARGS)

migrate: install
	$(BIN)/python -m shared.migrations

demo: install
	$(BIN)/python -m local.stack.demo

consistency: install
	$(BIN)/python -m local.ops.consistency

dead-letters: install
	$(BIN)/python -m local.ops.dead_letters list $(DEAD_LETTERS_ARGS)

redrive: install
	$(BIN)/python -m local.ops.dead_letters redrive $(REDRIVE_ARGS)

manifests: install
	$(BIN)/python -m local.deploy.manifests

compose-env: install
	$(BIN)/python -m local.deploy.compose_env

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache

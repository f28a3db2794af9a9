# One toolchain for people and CI: `make dev` runs the example stack, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv dev test lint format typecheck pytest chaos bench bench-quick clean services-stop

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## Start Kafka (tansu) and Redis locally, then bridge, worker and beat, and run the example
## (or your own: FLOWBRIDGE_APP, FLOWBRIDGE_BLUEPRINTS). KEEP=1 keeps it up without a terminal.
dev: venv
	$(PY) scripts/dev.py $(if $(KEEP),--keep) $(DEV_ARGS)

## Lint, type-check and run every test (what .ci/run calls).
test: venv lint typecheck pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(PY) -m pytest $(PYTEST_ARGS)

## The worker kill loop, long: kill -9 workers' main and pool processes 60 times while runs flow.
chaos: venv
	FLOWBRIDGE_TEST_KILLS=$${FLOWBRIDGE_TEST_KILLS:-60} $(PY) -m pytest tests/e2e/test_lost_dispatch.py -k loop -s $(PYTEST_ARGS)

## Stop the Cassandra and Kafka a test session left running (FLOWBRIDGE_TEST_KEEP_SERVICES=1).
services-stop:
	-../shared/cassandra/cassandra stop .services/cassandra
	-../shared/kafka/kafka stop .services/kafka

clean: services-stop
	rm -rf $(VENV) .dev .services .mypy_cache .ruff_cache .pytest_cache

## Benchmarks against raw Celery, a raw Kafka consumer and DBOS (docs/performance.md); ~2 min quick.
bench: venv
	$(PY) -m bench

bench-quick: venv
	$(PY) -m bench --quick

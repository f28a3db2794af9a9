# One toolchain for people and CI: `make dev` runs the example stack, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv dev test lint format typecheck pytest browser chaos chaos-dispatch scale soak bench bench-quick clean services-stop fuzz

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
test: venv browser lint typecheck pytest

## Debian's chromium and chromium-driver for the browser test (tests/e2e/test_web.py), installed
## when missing: CI starts from a clean machine. Never a downloaded browser build.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "note: the browser test needs chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"; fi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: venv
	$(VENV)/bin/mypy

## PYTEST_WORKERS processes share the tests (end-to-end tests mostly wait on their processes;
## 0: one process). Tests of one file stay in one process (their module fixtures).
PYTEST_WORKERS ?= 2
pytest: venv
	$(PY) -m pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

## The full fuzz suite (not part of `make test`, which runs its short form): 10,000 generated
## records through a real bridge on tansu and on Kafka, and 2,000 blueprint files per kind.
FUZZ_RECORDS ?= 10000
FUZZ_EXAMPLES ?= 2000
fuzz: venv
	FLOWBRIDGE_FUZZ_RECORDS=$(FUZZ_RECORDS) FLOWBRIDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	  $(PY) -m pytest tests/fuzz -o timeout=1800 -s $(PYTEST_ARGS)

## The chaos suite (docs/capacity.md): 1,000 fan-out/fan-in runs on SQLite and on Cassandra while
## workers, the bridge and Redis (restarted empty) are killed; then the worker kill loop.
CHAOS_RUNS ?= 1000
CHAOS_RATE ?= 4
chaos: venv
	FLOWBRIDGE_CHAOS_RUNS=$(CHAOS_RUNS) FLOWBRIDGE_CHAOS_RATE=$(CHAOS_RATE) FLOWBRIDGE_CHAOS_WAIT_S=$${FLOWBRIDGE_CHAOS_WAIT_S:-600} \
	  $(PY) -m pytest tests/e2e/test_chaos.py -o timeout=3600 -s $(PYTEST_ARGS)
	$(MAKE) chaos-dispatch

## The worker kill loop, long: kill -9 workers' main and pool processes 60 times while runs flow.
chaos-dispatch: venv
	FLOWBRIDGE_TEST_KILLS=$${FLOWBRIDGE_TEST_KILLS:-60} $(PY) -m pytest tests/e2e/test_lost_dispatch.py -k loop -s $(PYTEST_ARGS)

## Scale-out on the real Kafka 4.0 (docs/capacity.md): 2,000 runs through three bridges and three
## workers while bridges stop, start and die; then the throughput with 1, 2 and 3 of each.
SCALE_RUNS ?= 2000
scale: venv
	FLOWBRIDGE_SCALE_RUNS=$(SCALE_RUNS) FLOWBRIDGE_SCALE_THROUGHPUT=1 \
	  $(PY) -m pytest tests/e2e/test_scale_out.py -o timeout=3600 -s $(PYTEST_ARGS)

## The soak (docs/performance.md): 100,000 runs of a 3-node chain through one bridge and two
## workers on tansu and SQLite, as fast as they finish; RSS of each process, the store's size.
SOAK_RUNS ?= 100000
soak: venv
	FLOWBRIDGE_SOAK_RUNS=$(SOAK_RUNS) \
	  $(PY) -m pytest tests/e2e/test_soak.py -o timeout=21600 -s $(PYTEST_ARGS)

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

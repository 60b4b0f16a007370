# Task runner. `make run` and `make test` are the README's quickstart; CI runs `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: install kafka postgres services run test test-unit lint bench chaos stop clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(INSTALLED)

kafka:
	$(PYTHON) scripts/kafka_local.py start

postgres:
	$(PYTHON) scripts/postgres_local.py start

services: kafka postgres

# The service for real: local Kafka, the embedded SQLite default, the provider sandbox,
# and demo connections whose refreshes scroll by. Ctrl-C stops it.
run: install kafka
	$(BIN)/python scripts/demo.py

# Lint, then the whole suite against real Kafka and Postgres, its modules spread over
# TEST_PROCESSES processes (pytest-xdist; each has its own database and sandbox, every module its
# own topics): most of the suite's time is spent waiting on brokers, workers and timeouts.
TEST_PROCESSES ?= 3
test: install services lint
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# End to end, one table (docs/benchmarks.md): raw aiohttp, an Authlib loop, the seed's serial loop and
# the service's burst and wave, with scaling, plots, API and scan rows; its own broker (:29092),
# database and sandbox; about 20 minutes. Parts only: make bench BENCH_ARGS="--only raw,burst,wave".
# (HTTP transports alone: $(BIN)/python benchmarks/bench_http_transports.py --rounds 3.)
bench: install
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[dev,bench]'
	$(BIN)/python benchmarks/bench_e2e.py $(BENCH_ARGS)

# The real workers against the sandbox while things break (minutes; not part of `test`).
# Brings its own Kafka and Postgres; docs/reliability.md explains the figures.
chaos: install
	$(BIN)/python scripts/chaos.py $(CHAOS_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

stop:
	$(PYTHON) scripts/kafka_local.py stop
	$(PYTHON) scripts/postgres_local.py stop

clean: stop
	rm -rf $(VENV) .local

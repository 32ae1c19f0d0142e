# syncbus — every target sets itself up: the Debian packages it needs (deploy/setup.sh,
# installs as root, instant when present) and the virtualenv (`make install` is implied).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup setup-python setup-kafka setup-postgres setup-prometheus setup-browser \
	install run test test-fast lint typecheck bench soak bench-peers kafka-up kafka-down kafka-fetch postgres-up postgres-down clean

## Debian packages of every group (python kafka postgres prometheus browser), or of one
setup:
	@PYTHON=$(PYTHON) deploy/setup.sh all

setup-python setup-kafka setup-postgres setup-prometheus setup-browser:
	@PYTHON=$(PYTHON) deploy/setup.sh $(@:setup-%=%)

install: $(STAMP)

$(STAMP): pyproject.toml | setup-python
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

## run the bus on the embedded log with the example flows and a sandbox ERP/finance/HR
run: setup-python install
	deploy/sandbox/run.sh

## everything: config checks, mapping unit tests, the pytest suite (starts its own Kafka
## broker and PostgreSQL server)
test: setup install kafka-fetch
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/mypy
	$(BIN)/syncbus validate --config-dir .
	$(BIN)/syncbus test --config-dir .
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=25

test-fast: install
	$(BIN)/pytest -q -m "not kafka and not slow"

lint: install typecheck
	$(BIN)/ruff check src tests bench deploy

## mypy --strict over src/syncbus (settings and third-party exceptions: [tool.mypy] in pyproject.toml)
typecheck: install
	$(BIN)/mypy

bench: install kafka-fetch
	$(BIN)/python bench/run.py

## a node under 1,000 orders/s for 10 minutes: RSS and p99 latency per minute (not part of `make test`;
## SOAK_ARGS, e.g. "--minutes 3 --workers 2 --bus kafka")
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

## syncbus next to Benthos (Go module proxy) and Apache Camel (Maven Central) on the reference
## mapping, per CPU-second; builds both into var/peers/ (cached); not part of `make test`
bench-peers: install
	$(BIN)/python bench/peers/run.py $(BENCH_PEERS_ARGS)

kafka-fetch: setup-kafka
	deploy/kafka/kafka.sh fetch

kafka-up: setup-kafka
	deploy/kafka/kafka.sh up

kafka-down:
	deploy/kafka/kafka.sh down

## a private PostgreSQL on 127.0.0.1:55432 (PGPORT) in var/postgres; prints its SQLAlchemy URL
## (PG_TLS=1: TLS only, with a test CA in var/postgres/tls -- see deploy/postgres/README.md)
postgres-up: setup-postgres
	deploy/postgres/pg.sh up $(if $(filter 1 yes true,$(PG_TLS)),--tls)

postgres-down:
	deploy/postgres/pg.sh down

clean:
	-deploy/postgres/pg.sh down
	rm -rf var .pytest_cache .ruff_cache .mypy_cache

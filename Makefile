# syncbus — every target sets itself up (`make install` is implied).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-fast lint bench kafka-up kafka-down kafka-fetch clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

## run the bus on the embedded log with the example flows and a sandbox ERP/finance/HR
run: install
	deploy/sandbox/run.sh

## everything: config checks, mapping unit tests, the pytest suite (starts its own Kafka broker)
test: install kafka-fetch
	$(BIN)/syncbus validate --config-dir .
	$(BIN)/syncbus test --config-dir .
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/pytest -q -m "not kafka and not slow"

lint: install
	$(BIN)/ruff check src tests bench deploy

bench: install kafka-fetch
	$(BIN)/python bench/run.py

kafka-fetch:
	deploy/kafka/kafka.sh fetch

kafka-up:
	deploy/kafka/kafka.sh up

kafka-down:
	deploy/kafka/kafka.sh down

clean:
	rm -rf var .pytest_cache .ruff_cache

# driftline — two commands set up a fresh machine:  make demo   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit bench kafka-up kafka-down clean

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "installing Java 17 (Kafka needs it)"; apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	@command -v mvn >/dev/null || { echo "installing Maven (fetches Kafka's jars)"; apt-get update -qq && apt-get install -y -qq maven; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make test: unit, integration (real Kafka 4.x) and e2e tests
test: $(STAMP)
	$(PY) -m streams.kafka_local with $(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit tests/detectors -q

## make demo: the broker, the engine, a stream whose accuracy falls midway, the trigger it causes
demo: $(STAMP)
	$(PY) -m streams.kafka_local with $(PY) -m streams.demo

bench: $(STAMP)
	$(PY) -m streams.kafka_local with bash -c '$(PY) benchmarks/detectors.py && $(PY) benchmarks/codecs.py'

kafka-up: $(STAMP)
	$(PY) -m streams.kafka_local up

kafka-down: $(STAMP)
	$(PY) -m streams.kafka_local down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

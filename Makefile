# driftline — two commands set up a fresh machine:  make demo   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit bench kafka-up kafka-down clean prometheus promtool-check chromium

## install: .venv with the test extra, which includes every other (driftline[all]: service, faust,
## report, sim): what make demo and make test run
$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "installing Java 17 (Kafka needs it)"; apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	@command -v mvn >/dev/null || { echo "installing Maven (fetches Kafka's jars)"; apt-get update -qq && apt-get install -y -qq maven; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## prometheus: Debian's prometheus package (promtool for the rule checks, the server for the e2e test).
## A policy-rc.d keeps apt from starting its service (nothing listens on :9090); stopped again if it did.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package (promtool; the e2e test runs its own server)"; \
	  added=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	    chmod +x /usr/sbin/policy-rc.d; added=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	  rc=$$?; if [ -n "$$added" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  { systemctl disable --now prometheus || service prometheus stop; } >/dev/null 2>&1; exit $$rc; }

## chromium: Debian's chromium, headless, for the test that renders report.html in a real browser
chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium (the report's browser test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

## promtool-check: the scrape config and alert rules are valid and the alert unit tests pass
promtool-check: prometheus
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts.test.yml

## The tests that need no broker run on every core (pytest-xdist; a module's tests in one worker,
## so its module fixtures are built once); the broker tests run one at a time, as their timings assume.
UNIT_TESTS := tests/unit tests/detectors
BROKER_TESTS := tests/integration tests/e2e
XDIST := -n auto --dist loadscope

## make test: promtool checks, then unit tests (in parallel), integration (real Kafka 4.x) and e2e
## (real Prometheus) tests. PYTEST_ARGS: pytest options for both runs. Both always run; it fails
## if either did.
test: $(STAMP) promtool-check chromium
	@status=0; \
	$(PY) -m pytest $(UNIT_TESTS) $(XDIST) $(PYTEST_ARGS) || status=$$?; \
	$(PY) -m streams.tools.kafka_local with $(PY) -m pytest $(BROKER_TESTS) $(PYTEST_ARGS) || status=$$?; \
	exit $$status

test-unit: $(STAMP)
	$(PY) -m pytest $(UNIT_TESTS) $(XDIST) -q

## make demo: the broker, the engine, a stream whose accuracy falls midway, the trigger it causes
demo: $(STAMP)
	$(PY) -m streams.tools.kafka_local with $(PY) -m streams.tools.demo

## make bench: every benchmark (each prints a table; BENCHMARKS.md holds the last results)
bench: $(STAMP)
	$(PY) -m streams.tools.kafka_local with bash -c 'set -e; for b in codecs detectors recent_ids detection_quality trigger_quality estimation producer backtest engine; do \
	  [ -f benchmarks/$$b.py ] && { echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py; }; done'

kafka-up: $(STAMP)
	$(PY) -m streams.tools.kafka_local up

kafka-down: $(STAMP)
	$(PY) -m streams.tools.kafka_local down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

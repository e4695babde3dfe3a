# celery-fleet: one entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -o errexit -o pipefail -o nounset -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# pytest workers for the process-level suites; the machine has 2 cores.
PYTEST_WORKERS ?= 2

.PHONY: help setup lint test test-unit test-integration docs clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.done: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip wheel
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $@

setup: $(VENV)/.done ## Create .venv with pinned tools and the package (editable)

lint: setup ## ruff, mypy (src/, tools/), yamllint, ansible-lint
	$(BIN)/ruff check src tests bench molecule examples tools plugins
	$(BIN)/ruff format --check src tests bench molecule examples tools plugins
	$(BIN)/mypy
	$(BIN)/yamllint -s .
	@if [ -n "$$(ls roles 2>/dev/null)" ]; then $(BIN)/ansible-lint -q; fi

test-unit: setup ## Fast tests: settings, CLI, no servers
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) tests/unit

docs: setup ## Rewrite the inputs tables of docs/roles/*.md from roles/*/meta/argument_specs.yml
	$(BIN)/python tools/role_docs.py

test-integration: setup ## Real redis-server/redis-sentinel processes and Celery workers on loopback, fault suite
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) tests/integration tests/faults

# Each layer adds its own targets to one of the two lanes of `test` in mk/*.mk, balanced by
# measured durations (mk/molecule.mk): the process lane (TEST_TARGETS: lint, integration,
# compose end to end, molecule ha, default) and the systemd lane (TEST_SYSTEMD_TARGETS:
# unit, molecule fleet, rabbitmq).
TEST_TARGETS := lint test-integration
TEST_SYSTEMD_TARGETS := test-unit
-include mk/*.mk

test: setup ## Everything CI runs, two lanes side by side (TEST_LANES=1: one after the other)
	@bash .ci/lanes.sh "$(TEST_TARGETS)" "$(TEST_SYSTEMD_TARGETS)"

clean: ## Remove the venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Opsbook. `make up` starts the whole deployment; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ENV_FILE ?= .env
COMPOSE := scripts/compose.sh $(ENV_FILE)
VENV := .venv
PYTEST := $(VENV)/bin/pytest

.PHONY: help up down build logs ps test test-unit test-e2e lint lock clean-test bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

up: ## check .env, build the images and start the deployment; prints how to log in
	@scripts/init-env.sh $(ENV_FILE)
	@scripts/check-env.sh $(ENV_FILE)
	@scripts/build-images.sh $(ENV_FILE)
	@scripts/init-secrets.sh $(ENV_FILE)
	@$(COMPOSE) up -d --remove-orphans
	@scripts/wait-ready.sh $(ENV_FILE)

down: ## stop the deployment (volumes and .env are kept)
	@$(COMPOSE) down

build: ## build every image (plain docker build, base first)
	@scripts/init-env.sh $(ENV_FILE)
	@scripts/build-images.sh $(ENV_FILE)

logs: ## follow the logs of every service
	@$(COMPOSE) logs -f --tail=100

ps: ## list the deployment's containers
	@$(COMPOSE) ps

test: test-unit test-notebooks test-e2e ## every test: unit, runbooks, then end-to-end and browser on a stack of its own

test-unit: $(VENV)/.installed ## the tests that need no Docker (seconds)
	$(PYTEST) tests/unit images/recorder -q -m "not notebooks"

test-notebooks: $(VENV)/.installed ## the runbooks executed with papermill against a local fake fleet
	$(PYTEST) tests/unit -q -m notebooks

test-e2e: $(VENV)/.installed ## the real stack under compose project opsbook-test (never the one make up runs)
	@scripts/build-images.sh .env.example
	$(PYTEST) tests/e2e -q

lint: $(VENV)/.installed ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock: ## re-pin every image's Python dependencies (requirements.in -> requirements.txt)
	scripts/lock.sh

bench: $(VENV)/.installed ## after make up: measure on a stack of its own (opsbook-bench), write docs/benchmarks.md
	$(VENV)/bin/python -m tests.bench

clean-test: ## remove the test stack, its containers and volumes
	$(VENV)/bin/python -m tests.e2e.stack down

$(VENV)/.installed: tests/requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

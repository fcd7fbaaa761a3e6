# genmedia: every target bootstraps what it needs, so `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BENTOML := $(VENV)/bin/bentoml
MODEL_PROFILE ?= tiny
HOST ?= 127.0.0.1
PORT ?= 3000

# No usage analytics; the hub only for the full profile (tiny weights are built offline).
export BENTOML_DO_NOT_TRACK := True
ifneq ($(MODEL_PROFILE),full)
export HF_HUB_OFFLINE := 1
endif
export MODEL_PROFILE

.PHONY: setup servers node-client models serve test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

models: setup
	$(PY) -m models import --profile $(MODEL_PROFILE)

# `make serve PORT=3300` serves on another port; public_url follows it. Ctrl-C stops the server.
serve: models
	@echo "genmedia: serving profile '$(MODEL_PROFILE)' with storage '$${STORAGE_BACKEND:-local}' on http://$(HOST):$(PORT)"
	@if [ "$(MODEL_PROFILE)" = tiny ]; then echo "genmedia: tiny random weights: images and audio are noise, captions are gibberish (MODEL_PROFILE=full for real models)"; fi
	$(BENTOML) serve services.gateway:Gateway --host $(HOST) --port $(PORT)

# Debian's servers the tests run for real (PostgreSQL, Redis, Chromium): installed when missing and
# apt-get can (CI runs as root on Debian); elsewhere their tests skip with a message saying what is missing.
SERVER_PACKAGES := postgresql redis-server chromium
servers:
	@missing=$$(for package in $(SERVER_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "genmedia: installing $$missing"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
				|| echo "genmedia: could not install $$missing; their tests will skip"; \
		else echo "genmedia: $$missing not installed (needs root and apt-get); their tests will skip"; fi; \
	fi

# The openai npm package that tests/test_openai.py calls from Node, from its lockfile; without npm (or the
# registry) that one test skips, saying what is missing.
NODE_CLIENT := tests/openai_node
node-client:
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(NODE_CLIENT) --no-audit --no-fund --loglevel=error \
			|| echo "genmedia: npm ci failed in $(NODE_CLIENT); the Node client test will skip"; \
	else echo "genmedia: npm not installed; the Node client test will skip"; fi

test: setup servers node-client
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: bench load

# How close serving comes to the bare model (real model sizes, random weights): prints the table and writes
# load_tests/RESULTS.md (10-11 minutes on 2 cores). The first run builds the bench models into
# .data/bench-store (~7 GB, a few minutes).
bench: setup
	$(PY) -m load_tests.bench

# Locust against a tiny-model gateway on loopback, 8 users for 60 s; fails on any unexpected answer.
load: setup
	$(PY) -m load_tests.run_load

# --- Bentos, BentoCloud, client SDK (README "Deploy" and "Python client") ---
# `make build`: a Bento of the gateway, the three model services and the store's latest models, in the
# BentoML home (~/bentoml, or $BENTOML_HOME). BENTOFILE=deploy/bentos/<service>.yaml builds one model service.
# `make deploy`: build, render deploy/genmedia.template.yaml (instance types from GPU_INSTANCE_TYPE,
# CPU_INSTANCE_TYPE, GATEWAY_INSTANCE_TYPE) and create or update the BentoCloud deployment; it needs
# `bentoml cloud login`, the secrets, and MODEL_PROFILE=full (tiny weights are refused unless ALLOW_TEST_WEIGHTS=1).
# `make client`: regenerate client/openapi.json and client/genmedia_client/generated/ from the gateway's code.
BENTOFILE ?= bentofile.yaml
DEPLOYMENT_NAME ?= genmedia
DEPLOY_CONFIG := build/deploy/$(DEPLOYMENT_NAME).yaml
export DEPLOYMENT_NAME GPU_INSTANCE_TYPE CPU_INSTANCE_TYPE GATEWAY_INSTANCE_TYPE ALLOW_TEST_WEIGHTS

.PHONY: build deploy client screenshots

build: models
	$(BENTOML) build -f $(BENTOFILE) .

# The login is checked first: building a `full` Bento takes gigabytes and minutes, wasted without one.
deploy: setup
	@$(BENTOML) cloud current-context >/dev/null 2>&1 || { \
		echo "genmedia: not logged in to BentoCloud; run '$(BENTOML) cloud login' (see README \"Deploy\"), then make deploy again" >&2; \
		exit 1; }
	@$(MAKE) --no-print-directory models
	@tag=$$($(BENTOML) build -f $(BENTOFILE) -o tag . | sed -n 's/^__tag__://p') && test -n "$$tag" && \
	echo "genmedia: built $$tag" && \
	$(PY) -m tools.deployment_config --bento "$$tag" --output $(DEPLOY_CONFIG) && \
	if $(BENTOML) deployment get $(DEPLOYMENT_NAME) >/dev/null 2>&1; then \
		$(BENTOML) deployment update -f $(DEPLOY_CONFIG); \
	else \
		$(BENTOML) deploy -f $(DEPLOY_CONFIG); \
	fi

client: setup
	$(PY) -m tools.client_sdk

# `make screenshots`: docs/screenshots/*.png, each playground panel after a real request to a tiny-model
# gateway, driven in Debian's Chromium (`make servers` installs it); the README shows them.
screenshots: setup servers
	$(PY) -m tools.screenshots

# --- Reliability soak (README "Failure behaviour") ---
# The tiny-model composition for SOAK_MINUTES under mixed traffic while storage and model services fail;
# prints the figures (requests, faults, 5xx, lost outputs, peak RSS) and fails on a lost output, an
# unintended 5xx or gateway memory that keeps growing.
SOAK_MINUTES ?= 3

.PHONY: soak

soak: setup
	$(PY) -m load_tests.soak --minutes $(SOAK_MINUTES)

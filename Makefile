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

.PHONY: setup models serve test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

models: setup
	$(PY) -m models import --profile $(MODEL_PROFILE)

serve: models
	@echo "genmedia: serving profile '$(MODEL_PROFILE)' with storage '$${STORAGE_BACKEND:-local}' on http://$(HOST):$(PORT)"
	@if [ "$(MODEL_PROFILE)" = tiny ]; then echo "genmedia: tiny random weights: images and audio are noise, captions are gibberish (MODEL_PROFILE=full for real models)"; fi
	$(BENTOML) serve services.gateway:Gateway --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two entry points, both idempotent: `make train` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCH ?= squeezenet
TRAIN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup setup-test train test clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# core install: JAX, Flax, optax, orbax, TFDS (no TensorFlow), plotting
$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

# test install: the core plus pytest and torch/torchvision for conversion and parity tests
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev,torch]'
	touch $@ $(VENV)/.installed-core

setup: $(VENV)/.installed-core
setup-test: $(VENV)/.installed-test

train: setup
	$(BIN)/python scripts/train.py --arch $(ARCH) $(TRAIN_ARGS)

test: setup-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

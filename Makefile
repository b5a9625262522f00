# Two commands on a fresh machine: `make run` (the app on the bundled factors) and
# `make test` (the same set-up, the system packages the tests need, then the suite).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# pip on these machines warns about every absent local index: keep the log readable.
PIP := $(PY) -m pip --disable-pip-version-check
QUIET_PIP := { grep -v 'is ignored: it is neither a file nor a directory' || true; }

# Debian packages the tests use: the real Fashion-MNIST and a browser for Playwright.
FASHION_MNIST_FILE := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
CHROMIUM := /usr/bin/chromium

.PHONY: help run test lint setup setup-dev system-deps photo-deps assets bench gpu-check clean

help:
	@echo "make run    set up .venv and start the app on the bundled factor banks (http://127.0.0.1:7860)"
	@echo "make test   set up .venv + system packages, then ruff and the whole test suite"
	@echo "make assets train + factorize + evaluate the two bundled banks (long; see README)"
	@echo "make bench  side-by-side performance ratios (README, Performance)"
	@echo "make gpu-check  on a CUDA machine: GPU tests + the GPU benchmark table"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when a requirements file changed (the stamps are newer otherwise).
$(VENV)/.runtime-installed: requirements.txt pyproject.toml | $(PY)
	$(PIP) install -q -r requirements.txt 2>&1 | $(QUIET_PIP)
	$(PIP) install -q --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(PIP) install -q -r requirements-dev.txt 2>&1 | $(QUIET_PIP)
	touch $@

setup: $(VENV)/.runtime-installed
setup-dev: $(VENV)/.dev-installed

system-deps:
	@missing=""; \
	[ -f $(FASHION_MNIST_FILE) ] || missing="$$missing dataset-fashion-mnist"; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	  else \
	    echo "The tests need the Debian packages:$$missing"; \
	    echo "Install them with: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

# Real photographs and WordNet for the photo measurements and the photograph bank's recipe (not for the tests):
# Debian's wallpapers (kf_model.data.photos lists which are photographs) and WordNet 3.0's noun hierarchy.
PHOTO_PACKAGES := plasma-workspace-wallpapers sway-backgrounds wordnet-base
photo-deps: setup-dev
	@missing=""; for p in $(PHOTO_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	  else echo "Install them with: sudo apt-get install$$missing"; exit 1; fi; \
	fi

run: setup
	$(PY) app.py

lint: setup-dev
	$(VENV)/bin/ruff check .

test: setup-dev system-deps lint
	$(PY) -m pytest

# The bundled factor banks, their evaluation and the README's results table (about an hour on 2 cores).
assets: setup
	$(PY) -m kf_model.recipes all

bench: setup
	$(PY) -m kf_model.bench

# Where a CUDA device is present: the GPU tests (skipped elsewhere) and the GPU benchmark table.
gpu-check: setup-dev
	$(PY) -m pytest tests/test_gpu.py -q
	$(PY) -m kf_model.bench --device cuda --skip-serving --out runs/bench-gpu.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Set-up and the two README commands. The environment is a local .venv; torch 2.13.0 (CPU wheel) is
# installed before the project so that no CUDA build of torch is pulled in.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.orbitmesh-installed

.PHONY: setup demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/orbitmesh demo -o out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check recon guidance exporters tests benchmarks

clean:
	rm -rf out .pytest_cache .ruff_cache

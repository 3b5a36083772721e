# Set-up and the two README commands. The environment is a local .venv; torch 2.13.0 (CPU wheel) is
# installed before the project so that no CUDA build of torch is pulled in.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.orbitmesh-installed
# The Khronos glTF validator, for the export tests (skipped with a reason where npm is missing).
VALIDATOR := .cache/node/node_modules/gltf-validator/package.json
VALIDATOR_VERSION := 2.0.0-dev.3.10

.PHONY: setup demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# numba kernels compiled and cached now, not inside the first fit's stages (about a minute on 2 cores).
	$(BIN)/orbitmesh warmup
	touch $(STAMP)

$(VALIDATOR):
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix .cache/node gltf-validator@$(VALIDATOR_VERSION); \
	else echo "npm not found: the glTF validator tests will be skipped"; fi

setup: $(STAMP) $(VALIDATOR)

demo: $(STAMP)
	$(BIN)/orbitmesh demo -o out/demo

test: $(STAMP) $(VALIDATOR)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(VALIDATOR)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check recon guidance exporters tests benchmarks

clean:
	rm -rf out .pytest_cache .ruff_cache

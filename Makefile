# Developer entry points; `make test` is what .ci/run runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test lint typecheck check serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

venv: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'

lint: venv
	$(BIN)/ruff check transcoder tests twisted/plugins examples benchmarks
	$(BIN)/ruff format --check transcoder tests twisted/plugins examples benchmarks

typecheck: venv
	$(BIN)/mypy

test: venv lint typecheck
	$(BIN)/python -m pytest -q

serve: venv
	$(BIN)/transcoder-admin --data ./data user add demo@localhost --generate || true
	$(BIN)/twistd -n transcoder --data ./data

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

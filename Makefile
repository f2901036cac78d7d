# Developer entry points. Everything runs from a project-local virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: dev lint test test-ceph bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-installs only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,signing,gcs,azure]'
	touch $@

dev: $(VENV)/.installed

lint: dev
	$(BIN)/ruff check tfaudit_ci devkit tests bench scripts host entrypoint.py
	$(BIN)/ruff format --check tfaudit_ci devkit tests bench scripts host entrypoint.py
	$(BIN)/mypy
	$(BIN)/mypy --strict host/setup_env.py scripts/release_pin.py
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/lint.sh

test: dev
	$(BIN)/pytest $(PYTEST_ARGS)

test-ceph: dev
	bash scripts/install-ceph.sh
	$(BIN)/pytest --s3-server both $(PYTEST_ARGS)

bench: dev
	$(BIN)/python bench/run_all.py

demo: dev
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache

# `make run` and `make test` do all the set-up on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck install-check bench demo project clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("salesplan needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/salesplan serve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check domain projections api tests .ci/install_check.py
	$(MAKE) --no-print-directory typecheck

typecheck: $(STAMP)
	$(BIN)/mypy

# What users get: `pip install .` without extras (as the Dockerfile does), in a fresh virtualenv.
install-check:
	$(PYTHON) .ci/install_check.py

bench: $(STAMP)
	$(BIN)/salesplan bench

demo: $(STAMP)
	$(BIN)/salesplan demo

project: $(STAMP)
	$(BIN)/salesplan project

clean:
	rm -rf $(VENV) salesplan.db salesplan.db-wal salesplan.db-shm

# FlowPilot: `make demo` runs the demo workflow end to end; `make test` runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-fast up lint format system-deps install clean-home

$(STAMP): pyproject.toml
	@bash scripts/system-deps.sh venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh test

demo: install
	$(BIN)/flowpilot demo

test: install system-deps
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

up: install
	$(BIN)/flowpilot up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

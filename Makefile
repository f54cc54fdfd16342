# The two commands of the README:  make demo  ·  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install clean

$(BIN)/shoplake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/shoplake

demo: install
	$(BIN)/shoplake demo

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) shoplake-data .pytest_cache .mypy_cache .ruff_cache

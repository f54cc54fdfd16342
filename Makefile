# The two commands of the README:  make demo  ·  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install browser clean

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

# Debian's chromium for the dashboard's browser test (needs root; skipped without it).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium is not installed: the browser test will be skipped (apt-get install chromium)"

test: install lint browser
	$(BIN)/pytest -n 2 --dist loadgroup --durations=25

clean:
	rm -rf $(VENV) shoplake-data .pytest_cache .mypy_cache .ruff_cache

# The two commands of the README:  make demo  ·  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install debs browser clean

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

# Debian's packages the tests use (needs root; the tests that need one skip without it):
# chromium for the browser tests, PostgreSQL for the warehouse's, prometheus for promtool
# (without the node exporter it recommends).
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

debs:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && $(APT_INSTALL) chromium >/dev/null; } \
	  || echo "chromium is not installed: the browser tests will be skipped (apt-get install chromium)"
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && $(APT_INSTALL) --no-install-recommends postgresql >/dev/null; } \
	  || echo "PostgreSQL is not installed: the warehouse tests will be skipped (apt-get install postgresql)"
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && $(APT_INSTALL) --no-install-recommends prometheus >/dev/null; } \
	  || echo "promtool is not installed: its tests will be skipped (apt-get install prometheus)"

browser: debs  # its former name

test: install lint debs
	$(BIN)/pytest -n 2 --dist loadgroup --durations=25

clean:
	rm -rf $(VENV) shoplake-data .pytest_cache .mypy_cache .ruff_cache

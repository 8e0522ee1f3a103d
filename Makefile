# Beacon: `make demo` runs it, `make test` proves it. Only Python 3.11+ and git needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RATE ?= 500
DURATION ?= 30

.PHONY: chromium bench-rules install demo up test check lint typecheck unit integration bench loadtest clean

# The console's browser test drives Debian's Chromium (Playwright never downloads one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

install: $(STAMP)

demo: install
	$(BIN)/beacon demo

up: install
	$(BIN)/beacon up

test: install chromium check
	$(BIN)/python -m pytest

check: lint typecheck

lint: install
	$(BIN)/ruff check engine agents models loadtest tests
	$(BIN)/ruff format --check engine agents models loadtest tests

typecheck: install
	$(BIN)/mypy engine agents models

unit: install
	$(BIN)/python -m pytest tests/unit engine models loadtest

integration: install chromium
	$(BIN)/python -m pytest tests/integration

bench: install
	$(BIN)/python -m loadtest.bench --out BENCHMARKS.md
	$(BIN)/python -m loadtest.rulebench --out BENCHMARKS.md

bench-rules: install
	$(BIN)/python -m loadtest.rulebench --out BENCHMARKS.md

loadtest: install
	$(BIN)/python -m loadtest.run --rate $(RATE) --duration $(DURATION)

clean:
	rm -rf $(VENV) .beacon .pytest_cache .mypy_cache .ruff_cache *.egg-info

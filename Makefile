# Set-up and the two main jobs. `make demo` and `make test` each create the virtual environment
# (.venv, pinned by constraints.txt) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := src tests examples $(wildcard benchmarks)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/carousel demo --out runs/demo-$(shell date +%Y%m%d-%H%M%S)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m carousel bench --compile --output docs/performance.md
	$(BIN)/python benchmarks/online_1997.py --output docs/performance.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

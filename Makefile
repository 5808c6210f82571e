# segport: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# reinstall whenever the lock file or the project metadata changes
$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/segport --data-dir demo-data demo

test: $(STAMP)
	@test -x "$${SEGPORT_CHROMIUM:-/usr/bin/chromium}" || echo "note: the web console's browser tests will be skipped: \
	they need Chromium; install it with: sudo apt-get update && sudo apt-get install -y chromium"
	$(BIN)/ruff check segport tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check segport tests bench
	$(BIN)/ruff format --check segport tests bench
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	$(BIN)/python bench/export_bench.py

clean:
	rm -rf $(VENV) demo-data .pytest_cache

# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-scale bench-concurrent clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.todo.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(PY) -m ruff check
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) bench/capture.py
	$(PY) bench/sync.py
	$(PY) bench/scoped.py

# push and pull of 10k, 100k and 1M rows: time per row (the curve) and peak RSS of client and server
bench-scale: $(STAMP)
	$(PY) bench/scale.py

# 50 clients syncing at once: SQLite with 1 server process vs PostgreSQL with 1 and 2 (a throwaway cluster
# from the machine's PostgreSQL binaries; rows it cannot run say why)
bench-concurrent: $(STAMP)
	$(PY) bench/concurrency.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

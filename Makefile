# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean

BENCH_STAMP := $(VENV)/.bench-installed

$(STAMP): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m MRIDenoiseLib demo --out demo-output

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -n 2 --durations=20 Testing

# The fast tier: everything but the tests marked slow (child processes, training runs); about a minute.
test-fast: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -m "not slow" Testing

$(BENCH_STAMP): $(STAMP) requirements-bench.txt requirements-peers.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-peers.txt
	touch $(BENCH_STAMP)

# Quality and speed against the peers (hours on a 2-core CPU: BM4D dominates), then tables and plots.
bench: $(BENCH_STAMP)
	cd benchmarks && ../$(PY) quality.py && ../$(PY) speed.py && ../$(PY) report.py
	cd benchmarks && ../$(PY) paper003.py && ../$(PY) transfer.py && ../$(PY) finetune.py
	cd benchmarks && ../$(PY) paper004.py && ../$(PY) paper000.py
	cd benchmarks && ../$(PY) dti_dvalues.py && ../$(PY) dwi.py && ../$(PY) cohort.py

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy

clean:
	rm -rf $(VENV) demo-output .pytest_cache

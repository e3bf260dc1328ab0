# One entry point for setup, tests, the dashboard and the benchmarks.
# Everything installs into .venv from requirements.txt; nothing is assumed installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOGDIR ?= sample_runs

.PHONY: setup test lint dashboard diagnose bench check-cuda clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

test: setup
	$(PY) -m pytest -q

# ruff's checks and formatting over the whole tree (rules in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The dashboard on http://localhost:8501 (PORT=8600 for another port, ADDRESS=0.0.0.0 to
# serve other machines), usage statistics off, set in code (app/serve.py). Without LOGDIR=...
# on the command line it opens on the bundled sample runs.
ADDRESS ?= localhost
PORT ?= 8501
dashboard: setup
	$(PY) -m trainscope dashboard --address $(ADDRESS) --port $(PORT) \
		$(if $(filter command line environment,$(origin LOGDIR)),$(LOGDIR))

diagnose: setup
	$(PY) -m trainscope diagnose $(LOGDIR)

# Every benchmark, each printing ratios measured in one run (docs/performance.md).
bench: setup
	$(PY) benchmarks/collector_overhead.py --breakdown
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/analyze.py
	$(PY) benchmarks/dashboard.py $(if $(wildcard /usr/bin/chromium),--browser)

# On a machine with a GPU: the collector's CUDA tests (no host sync between flushes,
# bit-identical weights, AMP, the loss kept by reference and under CUDA graphs) and its
# overhead on the GPU.
check-cuda: setup
	$(PY) -c "import torch, sys; sys.exit(None if torch.cuda.is_available() else 'check-cuda: no CUDA device')"
	$(PY) -m pytest -q tests/test_collector_cuda.py tests/test_collector_survival.py
	$(PY) benchmarks/collector_overhead.py --device cuda --breakdown --blocks 20 --naive-blocks 4

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The two commands of the contract: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: setup demo test test-slow lint bench compare clean

setup: $(STAMP)

# torch==2.13.0 goes first: it installs a local CPU build, and once it is there no other
# dependency pulls a CUDA build from the registry.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m cryohydra.demo --outdir $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_simulate_projector.py

# cryohydra, cryoDRGN and ASPIRE side by side (installs the peers into their own environments
# under benchmarks/work/peers; 10,000 x 64 px, each method capped at 60 min: about 3 h on
# 2 cores; --box 128 for the 128 px set; see benchmarks/compare.py).
compare: $(STAMP)
	$(PY) benchmarks/compare.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info

# ecomrl: two commands on a fresh clone.
#   make demo   runs the whole pipeline on the bundled sample logs
#   make test   runs the test suite (what CI runs, through .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
# One torch thread per process: the CI and dev machines have two cores, and two torch threads
# spin-wait against each other (see offline_rl/README section on threads).
export OMP_NUM_THREADS ?= 1

.PHONY: demo test lint typecheck bench clean samples system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0" || $(PY) -m pip install --quiet "torch>=2.5"
	$(PY) -m pip install --quiet -e ".[dev,spark]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ecomrl demo --out $(DEMO_OUT)

# The report's browser test needs Debian's chromium, the Spark engine's test a Java runtime.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	  || echo "warning: could not install chromium; the browser test will say how"; }
	@command -v java >/dev/null 2>&1 || { echo "installing a Java runtime (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless) >/dev/null \
	  || echo "warning: could not install java; the Spark test will say how"; }

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

samples: $(STAMP)
	$(VENV)/bin/ecomrl simulate --sample-set data_samples

bench: $(STAMP)
	$(PY) -m benchmarks.simulator_bench

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .mypy_cache .ruff_cache

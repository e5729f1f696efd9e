# Quick start: `make demo` trains the default experiment, `make test` runs the tests.
# Each creates .venv on first use. torch is pinned to 2.13.0 so that a CPU
# machine installs the CPU build from its local wheel instead of a multi-GB CUDA build.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# pytest-xdist workers: the suite is CPU-bound; two keep both cores of a 2-core CI machine busy.
TEST_WORKERS ?= 2

.PHONY: venv demo test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[test,mujoco,ray]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/lifelong train configs/ppo_cartpole.yaml --run-dir runs/ppo_cartpole_$$(date +%Y%m%d-%H%M%S)

# The whole suite, learning tests (marked slow) included: what CI runs.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# Unit and property tests only.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/ppo_cartpole.py
	$(BIN)/python benchmarks/ppo_halfcheetah_sps.py

clean:
	rm -rf $(VENV) runs

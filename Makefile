# persp3d: `make test` and `make train` set up .venv themselves (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test lint format bench train clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The main job: self-supervised training on the procedural default (generated on first use,
# ~1 minute), 20 minutes on the CPU, then evaluation on its test split.
RUN ?= runs/default
TRAIN_ARGS ?= --max-minutes 20
# OMP_WAIT_POLICY=PASSIVE: torch's idle OpenMP threads sleep instead of spinning, which
# otherwise starves the fused kernel's threads on a busy machine.
train: setup
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/persp3d train --out $(RUN) $(TRAIN_ARGS)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/persp3d eval $(RUN) --split test

bench: setup
	$(PY) benchmarks/bench_projection.py $(BENCH_ARGS)

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache

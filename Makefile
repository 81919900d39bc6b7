# persp3d: `make test` and `make train` set up .venv themselves (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test lint format bench train readme-figure clean

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

# The main job: train on the procedural shapes (generated on first use), evaluate on the test
# split, write RUN/report.html. `make train QUICK=1` is a 3-4 minute try on a small set.
# A RUN folder that already holds a run is continued (--resume; a finished one only gets a
# fresh report); RUN=runs/other starts a new one.
ifeq ($(QUICK),1)
RUN ?= runs/quick
TRAIN_ARGS ?= --quick
MAIN_JOB := a quick try: a small procedural set (240 objects, ~1 minute to make the first time), \
  1.5 minutes of training, a report on 24 test objects (~1 minute)
else
RUN ?= runs/default
MINUTES ?= 20
TRAIN_ARGS ?= --max-minutes $(MINUTES)
MAIN_JOB := the procedural shapes (1200 objects, 0.5-4 minutes to make the first time), \
  $(MINUTES) minutes of self-supervised training, evaluation and the report (~1 minute)
endif
train: setup
	@echo "make train: $(MAIN_JOB); into $(RUN)/"
	@resume=; if [ -f "$(RUN)/last.pt" ]; then resume=--resume; \
	  echo "make train: $(RUN) holds a run: continuing it (make train RUN=runs/other starts a new one)"; fi; \
	  $(VENV)/bin/persp3d train --out $(RUN) $(TRAIN_ARGS) $$resume

# The README's picture, cut from the report of RUN (default runs/default: run `make train` first).
readme-figure: setup
	$(PY) scripts/readme_figure.py $(RUN) --out docs/report.png

bench: setup
	$(PY) benchmarks/bench_projection.py $(BENCH_ARGS)

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache

# make demo / make test / make bench: each builds .venv first if it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints-cpu.txt
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_AUTH_MODE ?= disabled
export RAY_TRAIN_ENABLE_PREEMPTION_WATCHER ?= 0
export RAY_TRAIN_ENABLE_PRINT_PATCH ?= 0
export RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S ?= 1.0

.PHONY: setup demo test test-fast bench bench-scale report clean

$(BIN)/frft-ray: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $(BIN)/frft-ray

setup: $(BIN)/frft-ray

# each demo writes a new run folder, so `make demo` can be repeated
demo: setup
	$(BIN)/frft-ray run --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# The whole suite. Tests that start their own Ray head (job submission) run in a separate
# pytest process so they never share a machine-wide Ray with the session-scoped instance.
test: setup
	$(BIN)/python -m pytest -q -m "not jobs" --timeout=900 --durations=15
	$(BIN)/python -m pytest -q -m "jobs" --timeout=900

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not jobs"

# our RM endpoint (direct ingress) against a plain FastAPI + uvicorn server with the same RM, e.g.
# make bench BENCH_ARGS=--quick;  make bench BENCH_ARGS="--device cuda --rm-shape gpt2-medium"
BENCH_ARGS ?=
bench: setup
	$(BIN)/python benchmarks/serve_bench.py $(BENCH_ARGS)

# the multi-seed report: runs every grid's cells not yet finished (SFT + initial RM shared per seed),
# then writes docs/results.md and docs/img/*.png; re-running skips finished cells
GRIDS ?= configs/grids/seeds.yaml configs/grids/seeds_uniform.yaml configs/grids/headline.yaml configs/grids/strategy.yaml configs/grids/score_scale.yaml configs/grids/ablation.yaml configs/grids/demo_vs_sft.yaml configs/grids/refit_from.yaml configs/grids/baselines.yaml configs/grids/random_share.yaml configs/grids/refit_from_uniform.yaml
report: setup
	$(BIN)/frft-ray sweep $(foreach g,$(GRIDS),--grid $(g))

# how cost grows with pool size, generations and policy shape (docs/scaling.md); SCALE_GRID=quick|cpu|full
SCALE_GRID ?= cpu
bench-scale: setup
	$(BIN)/python benchmarks/scale.py --grid $(SCALE_GRID) --out runs/scale-$(SCALE_GRID).json

clean:
	rm -rf runs .pytest_cache

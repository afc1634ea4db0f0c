# Two commands matter: `make run` (one full optimization cycle) and `make test`.
# Both create the virtual environment from uv.lock when it is missing or stale.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME := $(CURDIR)/var/dagster_home
export NUMBA_CACHE_DIR := $(CURDIR)/var/numba_cache
export PYTHONWARNINGS := ignore::DeprecationWarning,ignore::UserWarning
# MLflow's usage reports to its servers stay off (the UI too); set it to false to opt in.
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: setup run run-full run-postgres test lint typecheck validate pytest dev mlflow clean bench pg-server \
	bench-ingest bench-postgres bench-cycle run-quick broker-server run-cluster dashboard \
	dashboard-postgres bench-integrity replay replay-quick bench-optimization install kernels

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(STAMP): uv.lock pyproject.toml | $(UV)
	# Bytecode compiled at install: with PYTHONDONTWRITEBYTECODE set (as on this machine) every
	# process, test workers and the subprocesses of the tests included, would compile dagster,
	# mlflow and great_expectations from source at each import.
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $(STAMP)

# The backtest's numba kernels compiled into numba's cache once, as bytecode is at install, so the
# first cycle (and every test worker) loads them instead of compiling (ffe_dagster/kernel_warmup.py);
# again when a kernel's source changes, since numba would recompile it then anyway.
KERNELS := $(NUMBA_CACHE_DIR)/.compiled
$(KERNELS): $(STAMP) $(wildcard ffe_dagster/core/backtest/*.py) ffe_dagster/core/study/evaluation.py ffe_dagster/kernel_warmup.py
	$(BIN)/python -m ffe_dagster.kernel_warmup
	mkdir -p $(NUMBA_CACHE_DIR)
	touch $@

install: $(STAMP) $(DAGSTER_HOME)/dagster.yaml  ## the packages and the instance's dagster.yaml

kernels: $(KERNELS)  ## the backtest's numba kernels compiled into NUMBA_CACHE_DIR (once)

setup: install $(KERNELS)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

run: setup  ## one full cycle on the bundled data, the trial counts of docs/spec.md §4 (-v: ARGS=-v)
	$(BIN)/python -m ffe_dagster.cli run-cycle $(ARGS)

run-quick: setup  ## the same with the quick trial counts (16/16/16/20)
	FFE_TRIAL_PROFILE=quick $(BIN)/python -m ffe_dagster.cli run-cycle $(ARGS)

run-full: run  ## kept as a name: `make run` is the full cycle now

run-postgres: setup pg-server  ## the same cycle in production mode: Dagster, Optuna, registry, MLflow on PostgreSQL
	$(BIN)/python -m ffe_dagster.local_production

lint: install
	$(BIN)/ruff check ffe_dagster tests benchmarks
	$(BIN)/ruff format --check ffe_dagster tests benchmarks

typecheck: install
	$(BIN)/pyright

# `dg check defs` loads the project of pyproject.toml's [tool.dg] and validates its Definitions
# (Dagster's successor of `dagster definitions validate`); VIRTUAL_ENV names the venv it runs in.
validate: install
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs

pg-server:  ## PostgreSQL server binaries for tests/postgres (Debian package, installed if missing)
	scripts/ensure-postgres.sh

broker-server:  ## Redis server binary for tests/celery and run-cluster (Debian package, installed if missing)
	scripts/ensure-redis.sh

run-cluster: setup pg-server broker-server  ## one level's study through 2 Celery workers (private PostgreSQL + Redis)
	$(BIN)/python -m ffe_dagster.local_cluster $(ARGS)

dashboard: setup  ## optuna-dashboard over FFE_STUDIES_URL (default: the local journal), http://127.0.0.1:8080
	$(BIN)/python -m ffe_dagster.dashboard $(ARGS)

dashboard-postgres: setup pg-server  ## the same over the studies of make run-postgres (ARGS="--stream NAME": one level study)
	$(BIN)/python -m ffe_dagster.dashboard --production $(ARGS)

# pytest-xdist workers (`auto`: one per core); tests sharing a module set-up share a worker
# (tests/conftest.py). The checks run beside the tests: much of the tests' time is spent waiting.
TEST_WORKERS ?= auto
# The static checks run side by side first (their output kept apart), with the numba kernels
# compiled beside them (pyright leaves a core idle; on a fresh clone each test worker compiled the
# same kernels otherwise), then the tests, whose progress shows as they run.
test: install pg-server broker-server
	$(MAKE) --no-print-directory -j4 --output-sync=target lint typecheck validate kernels
	$(MAKE) --no-print-directory pytest

pytest: setup  ## the test suite alone, in parallel (TEST_WORKERS=0: in one process)
	$(BIN)/python -m compileall -q ffe_dagster tests benchmarks
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

bench: setup  ## engine throughput and the full curriculum vs the naive approach -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_engine

bench-optimization: setup  ## the Dagster optimization job vs the engine path, same bars and trials -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_optimization

bench-ingest: setup  ## backfill + incremental cycles from a local exchange at 10 req/s (~5 min) -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_ingest

REPLAY := $(BIN)/python -m ffe_dagster.replay --start 2022-01-01 --end 2024-07-01 --every weekly --selection best plateau
replay: setup  ## the system's cycles replayed weekly over 2022-01..2024-06, the spec's trial counts (27.5 min measured) -> benchmarks/results/replay.*
	$(REPLAY) --profile full $(ARGS)

replay-quick: setup  ## the same with the quick trial counts (5.2 min measured) -> benchmarks/results/replay_quick/
	$(REPLAY) --profile quick --out benchmarks/results/replay_quick $(ARGS)

bench-cycle: setup pg-server  ## make run fresh/again/incremental, run-postgres, bookkeeping, grains -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_cycle $(ARGS)

bench-postgres: setup pg-server  ## 1/2/4/8 Optuna workers on one PostgreSQL study; storage overhead -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_storage

bench-integrity: setup  ## false-promotion rate and power of the whole pipeline on null / planted-edge worlds -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_integrity

dev: setup  ## Dagster UI with the project loaded, http://127.0.0.1:3000
	DAGSTER_EVENT_BATCH_SIZE=1000 $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

MLFLOW_PORT ?= 5000
mlflow: setup  ## MLflow UI over the local tracking store, http://127.0.0.1:5000 (MLFLOW_PORT=... for another)
	mkdir -p var/mlflow
	$(BIN)/python -m ffe_dagster.mlflow_links --tracking-uri sqlite:///$(CURDIR)/var/mlflow/mlflow.db \
		--url http://127.0.0.1:$(MLFLOW_PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/var/mlflow/mlflow.db \
		--default-artifact-root $(CURDIR)/var/mlflow/artifacts -h 127.0.0.1 -p $(MLFLOW_PORT)

clean:  ## remove every local result (keeps the virtual environment)
	rm -rf var

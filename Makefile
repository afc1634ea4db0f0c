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

.PHONY: setup run run-full run-postgres test lint typecheck validate dev mlflow clean bench pg-server \
	bench-ingest bench-postgres bench-integrity

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $(STAMP)

setup: $(STAMP) $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

run: setup  ## one full cycle on the bundled data, quick trial counts
	$(BIN)/python -m ffe_dagster.cli run-cycle

run-full: setup  ## the same with the trial counts of SPEC section 4
	FFE_TRIAL_PROFILE=full $(BIN)/python -m ffe_dagster.cli run-cycle

run-postgres: setup pg-server  ## the same cycle in production mode: Dagster, Optuna, registry, MLflow on PostgreSQL
	$(BIN)/python -m ffe_dagster.local_production

lint: setup
	$(BIN)/ruff check ffe_dagster tests benchmarks
	$(BIN)/ruff format --check ffe_dagster tests benchmarks

typecheck: setup
	$(BIN)/pyright

validate: setup
	$(BIN)/dagster definitions validate -w workspace.yaml

pg-server:  ## PostgreSQL server binaries for tests/postgres (Debian package, installed if missing)
	scripts/ensure-postgres.sh

test: lint typecheck validate pg-server
	$(BIN)/pytest -q

bench: setup  ## engine throughput and the full curriculum vs the naive approach -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_engine

bench-ingest: setup  ## backfill + incremental cycles from a local exchange at 10 req/s (~5 min) -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_ingest

bench-postgres: setup pg-server  ## 1/2/4 Optuna workers on one PostgreSQL study; storage overhead -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_storage

bench-integrity: setup  ## false-promotion rate and power of the whole pipeline on null / planted-edge worlds -> benchmarks/results/
	$(BIN)/python -m benchmarks.bench_integrity

dev: setup  ## Dagster UI with the project loaded, http://127.0.0.1:3000
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow: setup  ## MLflow UI over the local tracking store, http://127.0.0.1:5000
	mkdir -p var/mlflow
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/var/mlflow/mlflow.db \
		--default-artifact-root $(CURDIR)/var/mlflow/artifacts -h 127.0.0.1 -p 5000

clean:  ## remove every local result (keeps the virtual environment)
	rm -rf var

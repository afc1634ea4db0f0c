"""MLflow tracking over the plain client (the dagster-mlflow package is stale).

One experiment holds the curriculum; each level study of each cycle is one run with its tags,
parameters, metrics and artifacts (trials table, best parameters, the level result).
"""

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from dagster import ConfigurableResource
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

_MAX_PARAM_LEN = 6000


class MlflowTrackingResource(ConfigurableResource):
    """Where runs are tracked: a tracking URI, an artifact folder and the experiment name."""

    tracking_uri: str
    artifact_dir: str
    experiment: str

    def client(self) -> MlflowClient:
        """An MLflow client bound to this tracking URI (no global state is set)."""
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        return MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_id(self, client: MlflowClient) -> str:
        """The experiment's id, created with the configured artifact folder when missing."""
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        Path(self.artifact_dir).mkdir(parents=True, exist_ok=True)
        return client.create_experiment(
            self.experiment, artifact_location=Path(self.artifact_dir).resolve().as_uri()
        )

    def log_study(
        self,
        *,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        trials: pl.DataFrame,
        json_artifacts: Mapping[str, Any],
        tables: Mapping[str, pl.DataFrame] | None = None,
    ) -> str:
        """Create one finished run with everything of a level study; returns the run id."""
        client = self.client()
        run = client.create_run(self.experiment_id(client), run_name=run_name, tags=dict(tags))
        run_id = run.info.run_id
        try:
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                params=[Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items()],
                tags=[RunTag("mlflow.runName", run_name)],
            )
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                trials.write_csv(folder / "trials.csv")
                trials.write_parquet(folder / "trials.parquet")
                for name, table in (tables or {}).items():
                    table.write_csv(folder / f"{name}.csv")
                for name, payload in json_artifacts.items():
                    (folder / name).write_text(json.dumps(payload, indent=2, default=str))
                client.log_artifacts(run_id, str(folder))
        except Exception:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        return run_id

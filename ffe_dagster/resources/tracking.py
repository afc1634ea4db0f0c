"""MLflow tracking and model registry over the plain client (the dagster-mlflow package is stale).

One experiment holds the curriculum, tagged as a model-development experiment so MLflow's UI opens
on its runs. Each cycle is one parent run (found or created by its cycle id, see
``tracking_cycles``) holding the cycle report, the deployment recommendation and the promotion
decisions; each level study of the cycle is a run nested under it with its tags (level,
direction, instruments, data range, Dagster run id, partition, code version, data fingerprint),
parameters, metrics, the bars it trained, validated and tested on as MLflow datasets, its
convergence as step metrics (``convergence/...`` by trial number) and artifacts (trials table,
best parameters, the level result, plots as PNG and HTML under ``plots/``). Comparing two cycles
is selecting two parents.

Promoted parameters are versions of the registered model ``ffe_promoted_parameters``: each version
holds ``params.json`` (and ``metrics.json``) from a dedicated run (nested under the cycle of the
study that found the set), is tagged with its regime, and the alias ``<regime>-current``
(``bull-current``, ...) points at the regime's current version; a rollback moves the alias back.

How a run is started and finished is in ``tracking_runs``, the registry's versions in
``tracking_registry``, the helper process a Dagster run logs through in ``tracking_worker``.
"""

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from dagster import ConfigurableResource, InitResourceContext
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import PrivateAttr

from ffe_dagster.core.study.convergence import StepValue
from ffe_dagster.core.study.datasets import StudyDataset
from ffe_dagster.resources.provenance import code_version as _code_version
from ffe_dagster.resources.provenance import git_commit
from ffe_dagster.resources.tracking_cycles import (
    EXPERIMENT_KIND_TAG,
    MODEL_DEVELOPMENT,
    CycleRef,
    DatasetSource,
    cycle_parent,
    log_datasets,
    log_step_metrics,
)
from ffe_dagster.resources.tracking_fields import StudyRunContent, StudyRunStart
from ffe_dagster.resources.tracking_registry import (
    REGISTERED_MODEL,
    current_alias,
    register_version,
)
from ffe_dagster.resources.tracking_runs import (
    ARTIFACTS_WHAT,
    MAX_TAG_LEN,
    NEW_ARTIFACTS,
    RUN_ARTIFACTS,
    ensure_writable_folder,
    finish_run,
    level_study_tags,
    local_folder,
    now_ms,
    started_run,
    write_json_artifacts,
)
from ffe_dagster.resources.tracking_worker import TrackingWorker, in_worker

if TYPE_CHECKING:  # plotting (matplotlib) is imported only by the runs that draw plots
    from ffe_dagster.core.reporting.plots import StudyPlotData

# MLflow reports usage to its servers unless told not to: tracking here stays on this machine
# (and no test may reach the internet). Setting it to false opts in.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _new_sqlite_store(uri: str) -> bool:
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()


class RunNotLoggedError(RuntimeError):
    """A level's MLflow run is not FINISHED: its logging failed or never ended."""


class MlflowTrackingResource(ConfigurableResource):
    """Where runs are tracked: a tracking URI, an artifact folder and the experiment name;
    ``registered_model`` is the registry model of promoted parameters. With ``use_worker``
    (the default), once a level starts a study, the run's MLflow calls run in a helper process,
    and a level's run is logged there while the next level's study runs (``tracking_worker``)."""

    tracking_uri: str
    artifact_dir: str
    experiment: str
    registered_model: str = REGISTERED_MODEL
    use_worker: bool = True
    _in_run: bool = PrivateAttr(default=False)
    _worker: TrackingWorker | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Inside a Dagster run, ``start_worker`` may start the tracking worker."""
        self._in_run = True

    def start_worker(self) -> None:
        """Start the tracking worker (once) when ``use_worker`` and inside a Dagster run; a
        level calls it before its study, so the worker opens the store meanwhile. A run that
        runs no study (every level reused) logs its few calls in its own process."""
        if self.use_worker and self._in_run and self._worker is None:
            self._worker = TrackingWorker(
                {
                    "tracking_uri": self.tracking_uri,
                    "artifact_dir": self.artifact_dir,
                    "experiment": self.experiment,
                    "registered_model": self.registered_model,
                },
                log_level=logging.getLogger("mlflow").getEffectiveLevel(),
            )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Wait for the worker's deferred logging (raising its failures), then end it."""
        worker, self._worker, self._in_run = self._worker, None, False
        if worker is not None:
            worker.close()

    def worker(self) -> TrackingWorker | None:
        """The running tracking worker, or None (outside a Dagster run, or ``use_worker``
        off): then every call runs in this process."""
        return self._worker

    def wait_for_logging(self) -> None:
        """Return once every deferred ``log_study`` is done; raise the first failure."""
        if self._worker is not None:
            self._worker.wait()

    @in_worker
    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """The status of each run this store holds (``FINISHED``, ``FAILED``, ``RUNNING``,
        ...); a run id it does not hold is left out."""
        client = self.client()
        out: dict[str, str] = {}
        for run_id in run_ids:
            try:
                out[run_id] = client.get_run(run_id).info.status
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        return out

    def require_finished(self, run_ids: Sequence[str]) -> None:
        """Wait for the deferred logging (``wait_for_logging``, raising its failure), then raise
        ``RunNotLoggedError`` naming every run of ``run_ids`` that is not FINISHED.

        A level's run is created before its id is stored, so a run this store does not hold
        (a result tracked in another store) is no logging of this store left unfinished, and
        is not checked."""
        self.wait_for_logging()
        unfinished = {k: v for k, v in self.run_statuses(run_ids).items() if v != "FINISHED"}
        if unfinished:
            raise RunNotLoggedError(
                "MLflow runs not logged in full: "
                + ", ".join(f"{k} {v}" for k, v in sorted(unfinished.items()))
                + "; their level must run again before its result is promoted or reported"
            )

    def client(self) -> MlflowClient:
        """An MLflow client bound to this tracking URI (no global state is set)."""
        if self._worker is not None and _new_sqlite_store(self.tracking_uri):
            self._worker.ready()  # the worker is creating the store: never two at once
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, client: MlflowClient) -> str:
        """The curriculum experiment's id, created with the configured artifact folder and
        tagged as a model-development experiment (an older experiment gets the tag too)."""
        name, artifacts = self.experiment, Path(self.artifact_dir)
        kind = {EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT}
        found = client.get_experiment_by_name(name)
        if found is None:
            ensure_writable_folder(artifacts, ARTIFACTS_WHAT, NEW_ARTIFACTS)
            try:
                return client.create_experiment(
                    name, artifact_location=artifacts.resolve().as_uri(), tags=kind
                )
            except MlflowException:
                # Another process created it between the lookup and the create.
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_DEVELOPMENT:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
        return found.experiment_id

    @in_worker
    def cycle_run_id(self, cycle: CycleRef) -> str:
        """The run id of the cycle's parent run, found by cycle id or created."""
        client = self.client()
        return cycle_parent(client, self.experiment_id(client), cycle)

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
        plots: "StudyPlotData | None" = None,
        data_range: str | None = None,
        partition: str | None = None,
        code_version: str | None = None,
        data_fingerprint: str | None = None,
        cycle: CycleRef | None = None,
        datasets: Sequence[StudyDataset] = (),
        dataset_source: DatasetSource | None = None,
        convergence: Sequence[StepValue] = (),
        wait: bool = True,
    ) -> str:
        """Create one finished run with everything of a level study; returns the run id.

        ``plots`` adds the study's plots (PNG and HTML under ``plots/``). The keyword tags are
        stored as ``data_range``, ``partition``, ``code_version`` and ``data_fingerprint``; the
        code version defaults to the package version plus the git commit, which also goes to
        ``mlflow.source.git.commit`` when known. With ``cycle`` the run is nested under the
        cycle's parent run (tags ``cycle_id`` and ``trigger`` too). ``datasets`` (read from
        ``dataset_source``) become the run's dataset inputs, ``convergence`` its step metrics
        ``convergence/<name>`` (step = trial number).

        With ``wait=False`` and the tracking worker running, it returns once the run exists;
        the worker logs the rest while the caller goes on, and ``wait_for_logging`` raises
        its failure (the run is then FAILED).
        """
        if datasets and dataset_source is None:
            raise ValueError("datasets need the dataset_source they were read from")
        start = StudyRunStart(
            run_name=run_name,
            tags=tags,
            data_range=data_range,
            partition=partition,
            code_version=code_version,
            data_fingerprint=data_fingerprint,
            cycle=cycle,
        )
        content = StudyRunContent(
            run_name=run_name,
            params=params,
            metrics=metrics,
            trials=trials,
            json_artifacts=json_artifacts,
            tables=tables,
            plots=plots,
            datasets=datasets,
            dataset_source=dataset_source,
            convergence=convergence,
        )
        worker = self._worker
        if worker is None:
            run_id = self.start_study_run(start)
            self.finish_study_run(run_id, content)
            return run_id
        run_id = str(worker.call("start_study_run", (start,), {}))
        if wait:
            worker.call("finish_study_run", (run_id, content), {})
        else:
            worker.defer(f"run {run_id} ({run_name})", "finish_study_run", (run_id, content))
        return run_id

    def start_study_run(self, start: StudyRunStart) -> str:
        """The first half of ``log_study``: the run with its tags (nested under the cycle's
        parent run); returns its id."""
        client = self.client()
        experiment_id = self.experiment_id(client)
        extra = {
            **level_study_tags(
                client, experiment_id, code_version=start.code_version, cycle=start.cycle
            ),
            **({"data_range": start.data_range} if start.data_range else {}),
            **({"partition": start.partition} if start.partition else {}),
            **({"data_fingerprint": start.data_fingerprint} if start.data_fingerprint else {}),
        }
        return started_run(
            client, experiment_id, run_name=start.run_name, tags={**extra, **start.tags}
        )

    def finish_study_run(self, run_id: str, content: StudyRunContent) -> None:
        """The second half of ``log_study``: params, metrics, artifacts, plots, dataset inputs
        and step metrics of run ``run_id``, which is then FINISHED (FAILED on any error)."""
        client = self.client()

        def artifacts(folder: Path) -> None:
            content.trials.write_csv(folder / "trials.csv")
            content.trials.write_parquet(folder / "trials.parquet")
            for name, table in (content.tables or {}).items():
                table.write_csv(folder / f"{name}.csv")
            write_json_artifacts(folder, content.json_artifacts)
            if content.plots is not None:
                from ffe_dagster.core.reporting.plots import study_plots
                from ffe_dagster.resources.tracking_plots import write_plots

                write_plots(study_plots(content.plots), folder / "plots")

        def inputs_and_steps(run_id: str) -> None:
            if content.dataset_source is not None:
                log_datasets(client, run_id, content.datasets, content.dataset_source)
            log_step_metrics(client, run_id, content.convergence, prefix="convergence/")

        finish_run(
            client,
            run_id,
            run_name=content.run_name,
            params=content.params,
            metrics=content.metrics,
            artifacts=artifacts,
            more=inputs_and_steps,
        )

    @in_worker
    def log_cycle_report(
        self,
        *,
        cycle: CycleRef,
        tags: Mapping[str, str],
        documents: Mapping[str, str],
        json_artifacts: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        note: str | None = None,
    ) -> str:
        """Log the cycle's report on its parent run and finish it: text ``documents`` (file
        name -> content, e.g. ``curriculum_report.md``), JSON artifacts, metrics and tags;
        ``note`` becomes the run's description in the MLflow UI (rendered as Markdown). Returns
        the parent's run id. A failure marks the parent FAILED and is raised."""
        client = self.client()
        experiment_id = self.experiment_id(client)
        run_id = cycle_parent(client, experiment_id, cycle)
        try:
            folder = local_folder(client.get_run(run_id).info.artifact_uri or "")
            if folder is not None:
                ensure_writable_folder(folder, ARTIFACTS_WHAT, RUN_ARTIFACTS)
            all_tags = {
                "code_version": _code_version(git_commit()),
                "reported": "true",
                **({"mlflow.note.content": note} if note else {}),
                **tags,
            }
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now_ms(), 0) for k, v in (metrics or {}).items()],
                tags=[RunTag(k, str(v)[:MAX_TAG_LEN]) for k, v in all_tags.items()],
            )
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                for name, text in documents.items():
                    (out / name).write_text(text)
                write_json_artifacts(out, json_artifacts or {})
                client.log_artifacts(run_id, str(out))
        except Exception:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        return run_id

    @in_worker
    def register_promotion(
        self,
        *,
        regime: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        source_run_id: str | None,
        description: str,
        registry_version: int | None = None,
        level: int | None = None,
        dagster_run_id: str | None = None,
    ) -> int:
        """Register ``params`` as a new version of the promoted-parameters model and make it the
        regime's current one (alias ``<regime>-current``); returns the model version.

        The version's source is a dedicated run holding ``parameters/params.json`` and
        ``parameters/metrics.json`` (numeric metrics are also the run's MLflow metrics).
        ``source_run_id`` is the level study's MLflow run, ``registry_version`` the version in the
        parameter registry (SQL), ``level`` and ``dagster_run_id`` where it came from; all become
        tags of the model version.
        """
        client = self.client()
        return register_version(
            client,
            self.experiment_id(client),
            self.registered_model,
            regime=regime,
            params=params,
            metrics=metrics,
            source_run_id=source_run_id,
            description=description,
            tags={
                "regime": regime,
                **(
                    {"registry_version": str(registry_version)}
                    if registry_version is not None
                    else {}
                ),
                **({"level": str(level)} if level is not None else {}),
                **({"source_run_id": source_run_id} if source_run_id else {}),
                **({"dagster_run_id": dagster_run_id} if dagster_run_id else {}),
            },
        )

    @in_worker
    def set_current(self, *, regime: str, model_version: int) -> None:
        """Point the regime's ``<regime>-current`` alias at ``model_version`` (a rollback when
        it is an earlier one). The version must exist and belong to ``regime``."""
        client = self.client()
        version = client.get_model_version(self.registered_model, str(model_version))
        owner = version.tags.get("regime")
        if owner != regime:
            raise ValueError(
                f"model version {model_version} of {self.registered_model} belongs to regime "
                f"{owner!r}, not {regime!r}"
            )
        client.set_registered_model_alias(
            self.registered_model, current_alias(regime), str(model_version)
        )

    @in_worker
    def clear_current(self, *, regime: str) -> None:
        """Remove the regime's ``<regime>-current`` alias (its current set was suspended and no
        earlier version exists to return to). Nothing happens when there is no alias."""
        if self.current_model_version(regime) is not None:
            self.client().delete_registered_model_alias(
                self.registered_model, current_alias(regime)
            )

    @in_worker
    def current_model_version(self, regime: str) -> int | None:
        """The model version the regime's alias points at, or None when it has none yet."""
        client = self.client()
        try:
            model = client.get_registered_model(self.registered_model)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        version = model.aliases.get(current_alias(regime))
        return int(version) if version is not None else None

    @in_worker
    def promoted_params(self, regime: str, model_version: int | None = None) -> dict[str, Any]:
        """The ``params.json`` of a model version (the regime's current one by default)."""
        version = model_version or self.current_model_version(regime)
        if version is None:
            raise LookupError(f"regime {regime} has no current model version")
        client = self.client()
        mv = client.get_model_version(self.registered_model, str(version))
        if mv.run_id is None:
            raise LookupError(f"model version {version} has no source run")
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(mv.run_id, "parameters/params.json", tmp)
            return json.loads(Path(path).read_text())

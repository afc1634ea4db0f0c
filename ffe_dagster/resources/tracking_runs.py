"""Creating and finishing MLflow runs: the artifact-folder probe, a run started with its tags and
finished with its params, metrics and files (FAILED on any error), and the tags every level
study's run carries. Used by ``tracking`` (the resource) and ``tracking_retest``."""

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ffe_dagster.resources.provenance import code_version as _code_version
from ffe_dagster.resources.provenance import git_commit
from ffe_dagster.resources.tracking_cycles import CycleRef, cycle_parent, parent_tag

MAX_PARAM_LEN = 6000  # MLflow's limits (mlflow.utils.validation): longer values are refused
MAX_TAG_LEN = 8000


class FolderNotWritableError(OSError):
    """A folder the project must write to (MLflow artifacts, the export) cannot be written."""


def ensure_writable_folder(folder: Path, what: str, remedy: str) -> None:
    """Create ``folder`` if needed and write then delete a probe file in it, so a folder that
    cannot be written fails here with a clear error rather than deep inside a library.

    Raises ``FolderNotWritableError`` naming ``what`` (e.g. ``MLflow artifact folder``), the
    folder, the OS reason and ``remedy`` (e.g. ``set FFE_EXPORT_DIR to a writable folder``).
    """
    probe = folder / f".ffe-write-probe-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise FolderNotWritableError(
            f"{what} {folder} is not writable: {exc}; make it writable or {remedy}"
        ) from exc


def local_folder(uri: str) -> Path | None:
    """The local folder of a ``file:`` URI or plain path; None for remote stores (s3, ...)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None


ARTIFACTS_WHAT = "MLflow artifact folder"
NEW_ARTIFACTS = "set FFE_MLFLOW_ARTIFACTS to a writable folder"
# An experiment keeps the artifact folder it was created with: another folder needs another one.
RUN_ARTIFACTS = (
    f"{NEW_ARTIFACTS} and FFE_MLFLOW_EXPERIMENT to a new experiment name (an existing "
    "experiment keeps the artifact folder it was created with)"
)


def now_ms() -> int:
    """Now in milliseconds since the epoch, as MLflow stamps metrics."""
    return int(time.time() * 1000)


def write_json_artifacts(folder: Path, payloads: Mapping[str, Any]) -> None:
    """Write each payload as indented JSON to ``folder/<name>`` (values JSON does not know, such
    as dates, as their text)."""
    for name, payload in payloads.items():
        (folder / name).write_text(json.dumps(payload, indent=2, default=str))


def level_study_tags(
    client: MlflowClient,
    experiment_id: str,
    *,
    code_version: str | None,
    cycle: CycleRef | None,
) -> dict[str, str]:
    """The tags every level study's run carries besides its own: its kind, the code version
    (the package version plus the git commit by default) and the commit as
    ``mlflow.source.git.commit`` when known; with ``cycle``, the cycle id, the trigger and the
    tag nesting it under the cycle's parent run (found or created)."""
    commit = git_commit()
    tags = {
        "ffe.kind": "level_study",
        "code_version": code_version or _code_version(commit),
        **({"mlflow.source.git.commit": commit} if commit else {}),
    }
    if cycle is not None:
        parent = cycle_parent(client, experiment_id, cycle)
        tags |= {"cycle_id": cycle.cycle_id, "trigger": cycle.trigger, **parent_tag(parent)}
    return tags


def started_run(
    client: MlflowClient, experiment_id: str, *, run_name: str, tags: Mapping[str, str]
) -> str:
    """Create one run with its ``tags`` and return its id (``finish_run`` logs the rest). An
    artifact folder that cannot be written marks it FAILED and fails here, with a clear
    error."""
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={k: str(v)[:MAX_TAG_LEN] for k, v in tags.items()},
    )
    run_id = run.info.run_id
    try:
        # An experiment keeps the artifact folder it was created with: probe where this
        # run's artifacts really go, before anything is logged.
        folder = local_folder(run.info.artifact_uri or "")
        if folder is not None:
            ensure_writable_folder(folder, ARTIFACTS_WHAT, RUN_ARTIFACTS)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    return run_id


def finish_run(
    client: MlflowClient,
    run_id: str,
    *,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: Callable[[Path], None],
    more: Callable[[str], None] | None = None,
) -> None:
    """Log a started run's ``params`` and ``metrics``, write its artifacts with
    ``artifacts(folder)`` and upload that folder, call ``more(run_id)`` for anything else, and
    finish it. Any error marks the run FAILED (then is raised), so a half-logged run never
    looks finished."""
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now_ms(), 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()],
            tags=[RunTag("mlflow.runName", run_name)],
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            artifacts(folder)
            client.log_artifacts(run_id, str(folder))
        if more is not None:
            more(run_id)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")

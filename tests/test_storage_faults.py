"""Storage faults: two processes writing the warehouse at once, corrupted input files, and folders
that cannot be written. Each shows a clear error (or none) and that nothing stored is lost.
"""

import ctypes
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from dagster import DagsterEventType

from ffe_dagster.config.settings import PROJECT_DIR, Settings
from ffe_dagster.core.promotion.config import LimitedGateConfig
from ffe_dagster.definitions import build_definitions
from ffe_dagster.promotion.export import ensure_export_writable, export_current
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import CycleRef
from ffe_dagster.resources.tracking_runs import FolderNotWritableError
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.resources.warehouse_connections import WarehouseLockTimeoutError
from ffe_dagster.sources.files import FileSource, read_signal_file
from tests.fakes.harness import SAMPLES, between, real_bars, utc

BTC = "BTC_USDT_1h"


def _python(
    code: str, *args: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    """``code`` run by this interpreter in the project folder, as a separate process."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


# --- 1. two processes writing bars at the same time -------------------------------------------

# Stores each UTC day of [first, last] ``rounds`` times (shuffled), recording when each write
# ran; both writers start together (a ready file each) so their writes really interleave.
WRITER = textwrap.dedent(
    """
    import json, logging, random, sys, time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    import polars as pl
    from ffe_dagster.resources.warehouse import WarehouseResource
    from ffe_dagster.config.settings import PACKAGE_DIR

    logging.basicConfig(level=logging.INFO)  # shows the warehouse's "waiting for the lock"
    path, name, first, last, rounds, folder = sys.argv[1:]
    bars = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / "BTC_USDT_1h.parquet")
    day, days = datetime.fromisoformat(first).replace(tzinfo=UTC), []
    while day <= datetime.fromisoformat(last).replace(tzinfo=UTC):
        days.append(day)
        day += timedelta(days=1)
    warehouse = WarehouseResource(path=path, lock_timeout_s=60)
    Path(folder, name + ".ready").touch()
    deadline = time.monotonic() + 60
    while len(list(Path(folder).glob("*.ready"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    writes = []
    for _ in range(int(rounds)):
        random.shuffle(days)
        for start in days:
            end = start + timedelta(days=1)
            frame = bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
            began = time.time()
            warehouse.store_fetched("BTC_USDT", start, end, frame, source="files", run_id=name)
            writes.append([began, time.time()])
            time.sleep(random.uniform(0.0, 0.03))  # a run does other work between writes
    Path(folder, name + ".json").write_text(json.dumps(writes))
    """
)


def test_two_processes_store_bars_at_once_without_loss_or_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    # Overlapping (Jan 6-10) and distinct days, each stored three times by its writer.
    spans = {"a": ("2024-01-01", "2024-01-10"), "b": ("2024-01-06", "2024-01-15")}
    procs = {
        name: _python(WRITER, str(path), name, first, last, "3", str(tmp_path))
        for name, (first, last) in spans.items()
    }
    outputs = {name: proc.communicate(timeout=120) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"writer {name} failed:\n{outputs[name][1]}"

    # The writes overlapped in time and alternated between the processes.
    writes = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in spans}
    assert len(writes["a"]) == len(writes["b"]) == 30
    a_start, a_end = writes["a"][0][0], writes["a"][-1][1]
    b_start, b_end = writes["b"][0][0], writes["b"][-1][1]
    assert a_start < b_end and b_start < a_end, "the writers did not run at the same time"
    timeline = sorted((end, n) for n in writes for _, end in writes[n])
    switches = sum(1 for x, y in itertools.pairwise(timeline) if x[1] != y[1])
    assert switches >= 4, f"the writes hardly interleaved ({switches} switches)"
    # ...so one of them had to wait for the other's lock, and said so.
    assert any("waiting for the lock on warehouse file" in err for _, err in outputs.values())

    # raw_bars holds exactly the union of the days, once each, with the source's values.
    warehouse = WarehouseResource(path=str(path))
    stored = warehouse.read_table(
        "SELECT instrument, ts, open, high, low, close, volume FROM raw_bars ORDER BY ts"
    )
    expected = between(real_bars(BTC), utc(2024, 1, 1), utc(2024, 1, 16))
    keys = stored.select("instrument", "ts")
    assert stored.height == keys.unique().height == expected.height
    assert set(stored["instrument"]) == {"BTC_USDT"}
    assert warehouse.read_bars("raw_bars", "BTC_USDT").equals(expected)
    progress = warehouse.read_table("SELECT day, bars FROM ingest_progress ORDER BY day")
    assert progress["day"].to_list() == [date(2024, 1, 1) + timedelta(days=i) for i in range(15)]
    assert progress["bars"].to_list() == [24] * 15


HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


def test_a_lock_held_too_long_fails_naming_the_file_and_the_wait(tmp_path: Path) -> None:
    path = str(tmp_path / "warehouse.duckdb")
    WarehouseResource(path=path).replace_window(
        "raw_bars", "BTC_USDT", utc(2024, 1, 1), utc(2024, 1, 2), _day(utc(2024, 1, 1))
    )
    holder = _python(HOLDER, path, "3")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        with (
            pytest.raises(WarehouseLockTimeoutError) as caught,
            WarehouseResource(path=path, lock_timeout_s=0.5).connect(),
        ):
            pass
        assert 0.5 <= time.monotonic() - began < 5.0
        message = str(caught.value)
        assert f"warehouse file {path} stayed locked by another process for 0." in message
        assert "lock_timeout_s=0.5" in message and "Conflicting lock" in message
        # With the default timeout the same call waits for the holder and succeeds.
        assert WarehouseResource(path=path).count("raw_bars", "BTC_USDT") == 24
        assert time.monotonic() - began >= 2.0
    finally:
        holder.kill()
        holder.communicate()


def test_an_error_other_than_the_lock_is_raised_at_once(tmp_path: Path) -> None:
    path = tmp_path / "not_a_warehouse.duckdb"
    path.write_bytes(b"this is no DuckDB file" * 100)
    began = time.monotonic()
    with pytest.raises(duckdb.Error) as caught, WarehouseResource(path=str(path)).connect():
        pass
    assert not isinstance(caught.value, WarehouseLockTimeoutError)
    assert time.monotonic() - began < 1.0


def _day(start: object) -> pl.DataFrame:
    return between(real_bars(BTC), start, start + timedelta(days=1))  # type: ignore[operator]


# --- 2. corrupted input files ------------------------------------------------------------------


def _truncated(path: Path) -> None:
    """``path`` cut to the first half of a real sample (a copy interrupted mid-way)."""
    data = (SAMPLES / f"{BTC}.parquet").read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "truncated parquet": ("bars.parquet", _truncated, "File out of specification"),
    "garbage bytes": (
        "bars.parquet",
        lambda p: p.write_bytes(os.urandom(4096)),
        "File out of specification",
    ),
    "non-numeric price": (
        "bars.csv",
        lambda p: p.write_text(
            "ts,open,high,low,close,volume\n"
            "2024-01-01T00:00:00Z,42283.58,42554.57,42261.02,42475.23,1271.68\n"
            "2024-01-01T01:00:00Z,n/a,42775.0,42431.65,42613.56,1196.37\n"
        ),
        "conversion from `str` to `f64` failed in column 'open'",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupted_bar_file_names_the_file_and_the_fault(tmp_path: Path, case: str) -> None:
    name, corrupt, fault = CORRUPTIONS[case]
    corrupt(tmp_path / name)
    source = FileSource(tmp_path, {"BTC_USDT": name})
    with pytest.raises(ValueError) as caught:
        source.fetch("BTC_USDT", utc(2020, 1, 1), utc(2030, 1, 1))
    assert str(tmp_path / name) in str(caught.value)
    assert fault in str(caught.value)


def test_a_corrupted_signal_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "signals.parquet"
    _truncated(path)
    with pytest.raises(ValueError) as caught:
        read_signal_file(path)
    assert str(caught.value).startswith(f"cannot read signal file {path}: ")
    assert "File out of specification" in str(caught.value)


def _failure_text(result: object) -> str:
    """Every failed step's error, with its causes, as one text."""
    texts: list[str] = []
    for event in result.all_events:  # type: ignore[attr-defined]
        if event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            while error is not None:
                texts.append(error.message)
                error = error.cause
    return "\n".join(texts)


def test_ingest_of_a_corrupted_sample_fails_clearly_and_keeps_stored_bars(
    tmp_path: Path,
) -> None:
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples)
    settings = Settings.from_env(
        {"FFE_VAR_DIR": str(tmp_path / "var"), "FFE_SAMPLES_DIR": str(samples)}
    )
    job = build_definitions(settings).resolve_job_def("ingest_job")
    # one month x instrument partition (the default grain)
    assert job.execute_in_process(partition_key="2024-01-01|BTC_USDT").success
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    january = between(real_bars(BTC), utc(2024, 1, 1), utc(2024, 2, 1))
    assert warehouse.read_bars("raw_bars", "BTC_USDT").equals(january)

    _truncated(samples / f"{BTC}.parquet")  # the user's file is damaged, then the month re-runs
    result = job.execute_in_process(partition_key="2024-01-01|BTC_USDT", raise_on_error=False)
    assert not result.success
    text = _failure_text(result)
    assert f"cannot read bar file {samples / BTC}.parquet" in text and "PAR1" in text
    assert warehouse.read_bars("raw_bars", "BTC_USDT").equals(january)  # nothing lost


# --- 3. a folder that cannot be written ---------------------------------------------------------

_PR_CAPBSET_DROP = 24
# CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER: what lets root ignore a folder's mode.
_FILE_CAPS = (1, 2, 3)


def _drop_file_capabilities() -> None:
    """Run in the child before exec: without these capabilities root obeys file modes like any
    user. (Switching to ``nobody`` does not work here: the interpreter lives under /root.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _FILE_CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap}) failed")


def _unprivileged(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` run so that a folder of mode 0o555 really cannot be written."""
    proc = _python(code, *args, preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _read_only(folder: Path) -> None:
    for sub in (*folder.rglob("*"), folder):
        if sub.is_dir():
            sub.chmod(0o555)


def _tracking(folder: Path) -> MlflowTrackingResource:
    return MlflowTrackingResource(
        tracking_uri=f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}",
        artifact_dir=str(folder / "artifacts"),
        experiment="faults",
    )


# The same resources as ``_tracking`` and ``_registry`` build, in a fresh process.
RESOURCES = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ffe_dagster.resources.registry import ParameterRegistryResource
    from ffe_dagster.resources.tracking import MlflowTrackingResource
    folder = Path(sys.argv[1])
    tracking = MlflowTrackingResource(
        tracking_uri=f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}",
        artifact_dir=str(folder / "artifacts"),
        experiment="faults",
    )
    registry = ParameterRegistryResource(url=f"sqlite:///{folder / 'registry.db'}")
    """
)
LOG_REPORT = RESOURCES + textwrap.dedent(
    """
    from ffe_dagster.resources.tracking_cycles import CycleRef
    tracking.log_cycle_report(
        cycle=CycleRef("second", "manual", "run-2"), tags={}, documents={"report.md": "second"}
    )
    """
)


def test_an_unwritable_artifact_folder_fails_clearly_and_marks_the_run_failed(
    tmp_path: Path,
) -> None:
    tracking = _tracking(tmp_path)
    first = tracking.log_cycle_report(
        cycle=CycleRef("first", "manual", "run-1"), tags={}, documents={"report.md": "first"}
    )
    _read_only(tmp_path / "artifacts")

    done = _unprivileged(LOG_REPORT, str(tmp_path))
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ffe_dagster.resources.tracking_runs.FolderNotWritableError: ")
    assert f"MLflow artifact folder {tmp_path / 'artifacts'}" in last
    assert "is not writable: [Errno 13] Permission denied" in last
    assert "set FFE_MLFLOW_ARTIFACTS to a writable folder" in last

    client = tracking.client()
    runs = client.search_runs([tracking.experiment_id(client)])
    status = {r.data.tags["cycle_id"]: r.info.status for r in runs}
    assert status == {"first": "FINISHED", "second": "FAILED"}
    stored = client.download_artifacts(first, "report.md", str(tmp_path))
    assert Path(stored).read_text() == "first"  # the earlier run's artifacts are intact


def test_a_new_experiment_in_an_unusable_artifact_folder_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    tracking = MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_dir=str(blocker / "artifacts"),
        experiment="faults",
    )
    with pytest.raises(FolderNotWritableError) as caught:
        tracking.log_cycle_report(
            cycle=CycleRef("c", "manual", "run"), tags={}, documents={"report.md": "x"}
        )
    assert str(caught.value).startswith(
        f"MLflow artifact folder {blocker / 'artifacts'} is not writable: "
        "[Errno 20] Not a directory"
    )
    client = tracking.client()
    assert client.get_experiment_by_name("faults") is None  # nothing half-created


EXPORT = RESOURCES + textwrap.dedent(
    """
    from ffe_dagster.core.promotion.config import LimitedGateConfig
    from ffe_dagster.promotion.export import publish_current
    publish_current(
        registry, tracking, folder / "exports" / "promoted.json", "second", [],
        LimitedGateConfig(), {"BTC_USDT": "BEAR"},
    )
    """
)


def _registry(folder: Path) -> ParameterRegistryResource:
    return ParameterRegistryResource(url=f"sqlite:///{folder / 'registry.db'}")


def test_an_unwritable_export_folder_fails_clearly_and_keeps_the_export(
    tmp_path: Path,
) -> None:
    export = tmp_path / "exports" / "promoted.json"
    export_current(
        _registry(tmp_path), export, "first", LimitedGateConfig(), active={"BTC_USDT": "BULL"}
    )
    before = export.read_bytes()
    _read_only(tmp_path / "exports")

    done = _unprivileged(EXPORT, str(tmp_path))
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ffe_dagster.resources.tracking_runs.FolderNotWritableError: ")
    assert f"export folder {export.parent} is not writable: [Errno 13] Permission denied" in last
    assert "set FFE_EXPORT_DIR to a writable folder" in last
    assert export.read_bytes() == before
    assert json.loads(before)["dagster_run_id"] == "first"
    assert [p.name for p in export.parent.iterdir()] == ["promoted.json"]  # no .tmp, no probe


def test_the_export_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    ensure_export_writable(tmp_path / "new" / "promoted.json")
    assert list((tmp_path / "new").iterdir()) == []


OPENER = textwrap.dedent(
    """
    import sys, duckdb
    duckdb.connect(sys.argv[1]).close()
    print("opened", flush=True)
    """
)


def test_a_session_holds_the_file_between_calls_and_frees_it_when_it_ends(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "warehouse.duckdb")
    warehouse = WarehouseResource(path=path, lock_timeout_s=0.5)
    warehouse.replace_window(
        "raw_bars", "BTC_USDT", utc(2024, 1, 1), utc(2024, 1, 2), _day(utc(2024, 1, 1))
    )
    # Outside a session the file is free between calls...
    assert warehouse.latest_level_result(1) is None
    assert _python(OPENER, path).wait(timeout=60) == 0
    with warehouse.session():
        # ...inside one, a single connection holds it from call to call (another process
        # cannot open it), and calls whose results are left unfinished do not disturb the next.
        assert warehouse.latest_level_result(1) is None
        assert _python(OPENER, path).wait(timeout=60) != 0
        with WarehouseResource(path=path).session():  # nested: the outer session's connection
            assert warehouse.read_bars("raw_bars", "BTC_USDT").height == 24
        assert warehouse.count("raw_bars") == 24
        assert warehouse.read_table("SELECT current_setting('TimeZone') AS tz")["tz"][0] == "UTC"
    assert _python(OPENER, path).wait(timeout=60) == 0
    with pytest.raises(RuntimeError), warehouse.session():
        raise RuntimeError("a failure inside the session")
    assert _python(OPENER, path).wait(timeout=60) == 0  # an error inside closes it too

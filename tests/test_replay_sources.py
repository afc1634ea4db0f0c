"""``python -m ffe_dagster.replay`` on a user's own signal file (a ``file_signals`` curriculum,
``FFE_CURRICULUM``) and on a DuckDB warehouse (``--warehouse``), as README "Replay" documents:
two monthly cycles with tiny trial counts write a report with decisions and equity, and the same
replay on inputs that end just before its last cycle (bars, and the signal file) stores the same
cycle records, so no bar or signal at or after a cycle's time reached it."""

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import CONFIG_DIR, PACKAGE_DIR
from ffe_dagster.core.backtest.strategies import FileSignals
from ffe_dagster.core.replay.timeline import level_data_before
from ffe_dagster.replay.__main__ import main
from ffe_dagster.replay.driver import bundled_history, cycle_key
from ffe_dagster.resources.warehouse import WarehouseResource

UNIVERSE = load_universe(CONFIG_DIR / "universe.yaml")
START, LAST, END = (datetime(2022, m, 1, tzinfo=UTC) for m in (3, 4, 5))
ARGS = ["--start", "2022-03-01", "--end", "2022-05-01", "--every", "monthly", "--profile", "quick"]


@pytest.fixture(scope="module")
def bars() -> dict[str, pl.DataFrame]:
    return dict(bundled_history(UNIVERSE, PACKAGE_DIR / "data" / "samples").bars)


def _tiny_curriculum(folder: Path, signal_file: Path | None) -> Path:
    """The bundled curriculum with 4-6 trials per level and 4 walk-forward trials, trading
    ``signal_file`` (``file_signals``) when given."""
    text = (CONFIG_DIR / "curriculum.yaml").read_text()
    # every level's trials and the walk-forward trials
    text = re.sub(r"trials: \{full: \d+, quick: \d+\}", "trials: {full: 4, quick: 4}", text)
    if signal_file is not None:
        builtin = "strategy: sma_crossover\nstrategy_options: {}"
        assert builtin in text
        text = text.replace(
            builtin, f"strategy: file_signals\nstrategy_options: {{path: '{signal_file}'}}"
        )
    path = folder / "curriculum.yaml"
    path.write_text(text)
    return path


def _signals(bars: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """What another system might produce: per instrument a long entry every 41st bar and a
    short one every 67th, over the whole history (also after the replay's cycles)."""
    frames = []
    for key, frame in sorted(bars.items()):
        i = np.arange(frame.height)
        signal = np.where(i % 41 == 0, 1, np.where(i % 67 == 0, -1, 0))
        frames.append(
            pl.DataFrame({"instrument": key, "ts": frame["ts"], "signal": signal})
            .filter(pl.col("signal") != 0)
            .with_columns(pl.col("signal").cast(pl.Int8))
        )
    return pl.concat(frames)


def _replay(folder: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> list[dict[str, Any]]:
    """Run the replay's command line into ``folder``; returns its stored cycle records."""
    monkeypatch.setenv("FFE_VAR_DIR", str(folder / "var"))
    main([*ARGS, "--folder", str(folder / "state"), "--out", str(folder / "out"), *extra])
    report = json.loads((folder / "out" / "replay.json").read_text())
    assert report["cycles"] == 2
    assert report["rules"]["system (best)"]["days"] == (END - START).days  # equity day by day
    assert {"no_gates (best)", "fixed (best)", "buy_and_hold", "flat"} <= set(report["rules"])
    part = report["selections"]["best"]
    assert part["trials"] > 0 and sum(part["decisions"].values()) > 0  # gates decided
    assert [c["t"][:10] for c in part["per_cycle"]] == ["2022-03-01", "2022-04-01"]
    assert (folder / "out" / "replay_equity.png").stat().st_size > 1000
    cycles = sorted((folder / "state" / "best" / "cycles").glob("*.json"))
    return [json.loads(p.read_text()) for p in cycles]


def test_a_replay_on_a_users_signal_file_sees_no_signal_or_bar_from_its_future(
    bars: dict[str, pl.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signals = _signals(bars)
    path = tmp_path / "signals.parquet"
    signals.write_parquet(path)
    monkeypatch.setenv("FFE_CURRICULUM", str(_tiny_curriculum(tmp_path, path)))
    whole = _replay(tmp_path / "whole", monkeypatch)
    # Every level traded the file's signals (nothing else: the strategy has no parameters).
    chosen = [lv["chosen"] for r in whole for lv in r["levels"].values() if lv["chosen"]]
    assert chosen and all("fast_window" not in c for c in chosen)

    # The same file, and the same bars, without anything at or after the last cycle's time:
    # the stored records (keys included, which hash the signals before each cycle) are equal.
    signals.filter(pl.col("ts") < LAST).write_parquet(path)
    samples = tmp_path / "samples"
    samples.mkdir()
    for key, name in UNIVERSE.files.items():
        bars[key].filter(pl.col("ts") < LAST).write_parquet(samples / Path(name).name)
    monkeypatch.setenv("FFE_SAMPLES_DIR", str(samples))
    cut = _replay(tmp_path / "cut", monkeypatch)
    assert cut == whole

    # A cycle's key hashes the signals before its time: a later one changes nothing, an edited
    # earlier one gives another key (so a stored record is never reused for other signals).
    history = bundled_history(UNIVERSE, PACKAGE_DIR / "data" / "samples")
    curriculum = load_curriculum(CONFIG_DIR / "curriculum.yaml")

    def key_of(frame: pl.DataFrame) -> str:
        data = replace(history, signals=FileSignals.checked(frame, "signals"))
        return cycle_key("start", START, curriculum, level_data_before(data, START, 30), "")

    edited = signals.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(-pl.col("signal")).otherwise("signal")
    )
    assert key_of(signals) == key_of(signals.filter(pl.col("ts") < START)) != key_of(edited)


def test_a_replay_on_a_warehouse_sees_no_bar_from_its_future(
    bars: dict[str, pl.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FFE_CURRICULUM", str(_tiny_curriculum(tmp_path, None)))
    records = []
    for name, end in (("whole", datetime(2100, 1, 1, tzinfo=UTC)), ("cut", LAST)):
        # what the ingest job stores: validated bars per instrument (the replay reads only these)
        path = tmp_path / f"{name}.duckdb"
        warehouse = WarehouseResource(path=str(path))
        for key, frame in bars.items():
            part = frame.filter(pl.col("ts") < end)
            since = datetime(2000, 1, 1, tzinfo=UTC)
            warehouse.replace_window("validated_bars", key, since, end, part)
        records.append(_replay(tmp_path / name, monkeypatch, "--warehouse", str(path)))
        report = json.loads((tmp_path / name / "out" / "replay.json").read_text())
        assert report["settings"]["source"] == str(path)
    whole, cut = records
    assert cut == whole

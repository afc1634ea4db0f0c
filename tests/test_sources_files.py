"""The file source: bundled Parquet, and a user's CSV with a column mapping; the signal file of a
``file_signals`` curriculum (its checks: ``tests/core/test_strategies.py``)."""

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config import load_curriculum
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import Segment
from ffe_dagster.core.data.bars import OHLCV_SCHEMA, Instrument, MarketKind
from ffe_dagster.core.study.levels import entry_strategy
from ffe_dagster.sources.base import fetch_all
from ffe_dagster.sources.files import FileSource, curriculum_signals, read_signal_file
from tests.fakes.harness import SAMPLES, between, real_bars, utc

EUR = Instrument("EUR_USD", "EUR/USD", MarketKind.FOREX, has_volume=False)


def test_bundled_parquet_one_page() -> None:
    source = FileSource(SAMPLES, {"EUR_USD": "EUR_USD_1h.parquet"})
    bars, stats = fetch_all(source, EUR, utc(2024, 1, 1), utc(2024, 2, 1), now=utc(2030, 1, 1))
    assert bars.equals(between(real_bars("EUR_USD_1h"), utc(2024, 1, 1), utc(2024, 2, 1)))
    assert bars["volume"].null_count() == bars.height  # Dukascopy publishes no volume
    assert stats.pages == 1 and stats.requests == 0
    assert not source.resumable


def _csv(tmp_path: Path, ts: list[object]) -> Path:
    real = real_bars("BTC_USDT_1h").head(3)
    path = tmp_path / "mine.csv"
    pl.DataFrame(
        {
            "Time": ts,
            "Open": real["open"],
            "High": real["high"],
            "Low": real["low"],
            "Close": real["close"],
            "Vol": real["volume"],
        }
    ).write_csv(path)
    return path


COLUMNS = {"Time": "ts", "Open": "open", "High": "high", "Low": "low", "Close": "close"}


def test_csv_with_column_mapping_and_unix_seconds(tmp_path: Path) -> None:
    real = real_bars("BTC_USDT_1h").head(3)
    _csv(tmp_path, real["ts"].dt.epoch("s").to_list())
    source = FileSource(
        tmp_path, {"BTC": "mine.csv"}, columns={**COLUMNS, "Vol": "volume"}, ts_unit="s"
    )
    bars = source.fetch("BTC", utc(2020, 1, 1), utc(2021, 1, 1))
    assert bars.equals(real)
    assert bars.schema == pl.Schema(OHLCV_SCHEMA)


def test_csv_with_iso_text_times_naive_means_utc(tmp_path: Path) -> None:
    real = real_bars("BTC_USDT_1h").head(3)
    _csv(tmp_path, [t.strftime("%Y-%m-%d %H:%M:%S") for t in real["ts"].to_list()])
    source = FileSource(tmp_path, {"BTC": "mine.csv"}, columns={**COLUMNS, "Vol": "volume"})
    assert source.fetch("BTC", utc(2020, 1, 1), utc(2021, 1, 1))["ts"].equals(real["ts"])


def test_numbers_without_a_unit_missing_columns_and_files_are_clear_errors(
    tmp_path: Path,
) -> None:
    _csv(tmp_path, [1, 2, 3])
    with pytest.raises(ValueError, match="set ts_unit"):
        FileSource(tmp_path, {"BTC": "mine.csv"}, columns=COLUMNS).fetch(
            "BTC", utc(2020, 1, 1), utc(2021, 1, 1)
        )
    with pytest.raises(ValueError, match="missing columns \\['volume'\\]"):
        FileSource(tmp_path, {"BTC": "mine.csv"}, columns=COLUMNS, ts_unit="s").fetch(
            "BTC", datetime(1970, 1, 1, tzinfo=UTC), utc(2021, 1, 1)
        )
    with pytest.raises(FileNotFoundError, match="not found"):
        FileSource(tmp_path, {"BTC": "absent.parquet"}).fetch(
            "BTC", utc(2020, 1, 1), utc(2021, 1, 1)
        )
    with pytest.raises(KeyError, match="no file configured"):
        FileSource(tmp_path, {}).fetch("BTC", utc(2020, 1, 1), utc(2021, 1, 1))


# --- signal files ------------------------------------------------------------------------------


def test_missing_signal_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.parquet"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_signal_file(path)


def test_unreadable_signal_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_text("not parquet")
    with pytest.raises(ValueError, match=re.escape(f"cannot read signal file {path}")):
        read_signal_file(path)


def test_a_file_signals_curriculum_trades_its_file(tmp_path: Path) -> None:
    builtin = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
    assert builtin.strategy != "file_signals" and curriculum_signals(builtin) is None
    path = tmp_path / "signals.parquet"
    pl.DataFrame({"ts": [datetime(2024, 1, 1, 1, tzinfo=UTC)], "signal": [1]}).write_parquet(path)
    curriculum = replace(builtin, strategy="file_signals", signal_file=str(path))
    signals = curriculum_signals(curriculum)
    assert signals is not None and signals.source == str(path)
    strategy = entry_strategy(curriculum, signals)
    bars = _segment(3)
    assert strategy.signals_for(bars, {}).tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="needs a signal file"):
        entry_strategy(curriculum)  # core reads no file: the signals must be passed in


def _segment(n: int) -> Segment:
    ts = np.datetime64("2024-01-01T00:00", "us") + np.arange(n) * np.timedelta64(1, "h")
    prices = np.ones(n)
    return Segment("BTC_USDT", ts, prices, prices, prices, prices, 8760.0)

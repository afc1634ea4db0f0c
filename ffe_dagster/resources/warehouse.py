"""The DuckDB warehouse of bars, quarantine, regimes and level results.

Writes are idempotent: a partition's time window is deleted and inserted again in one
transaction, so re-materializing never duplicates or loses rows. DuckDB allows one writer per
file, so every writing asset runs in the ``warehouse`` concurrency pool (see dagster.yaml); a
connection still waits for the file lock, since two processes (two runs, two code servers, a
backfill and a manual run) may reach the file at once outside one pool.
"""

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from dagster import ConfigurableResource

from ffe_dagster.core.data.bars import OHLCV_SCHEMA
from ffe_dagster.core.data.frame_diff import first_difference
from ffe_dagster.core.data.partition_state import PartitionState
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.resources.warehouse_connections import connect_waiting, open_sessions

# Strict JSON has no infinity (a profit factor without losses is inf): such floats are stored as
# {"$float": "inf"} / {"$float": "-inf"} / {"$float": "nan"} and read back as floats.
_FLOAT_TAG = "$float"


def _tag_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, Mapping):
        return {k: _tag_non_finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tag_non_finite(v) for v in value]
    return value


def _untag_non_finite(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and isinstance(obj.get(_FLOAT_TAG), str):
        return float(obj[_FLOAT_TAG])
    return obj


def encode_result_json(result: Mapping[str, Any]) -> str:
    """A level result as strict JSON with non-finite floats tagged (``decode_result_json``)."""
    return json.dumps(_tag_non_finite(result), default=str, allow_nan=False)


def decode_result_json(text: str) -> dict[str, Any]:
    """The level result ``encode_result_json`` stored, with ``inf`` and ``nan`` back as floats."""
    return json.loads(text, object_hook=_untag_non_finite)


_BAR_COLUMNS = (
    "ts TIMESTAMPTZ NOT NULL, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE"
)
_DDL = (
    f"CREATE TABLE IF NOT EXISTS raw_bars (instrument VARCHAR NOT NULL, {_BAR_COLUMNS}, "
    "PRIMARY KEY (instrument, ts))",
    f"CREATE TABLE IF NOT EXISTS validated_bars (instrument VARCHAR NOT NULL, {_BAR_COLUMNS}, "
    "PRIMARY KEY (instrument, ts))",
    f"CREATE TABLE IF NOT EXISTS bars_quarantine (instrument VARCHAR NOT NULL, {_BAR_COLUMNS}, "
    "rule VARCHAR NOT NULL, reason VARCHAR NOT NULL, run_id VARCHAR, quarantined_at TIMESTAMPTZ)",
    "CREATE TABLE IF NOT EXISTS market_regimes (instrument VARCHAR NOT NULL, ts TIMESTAMPTZ, "
    "regime VARCHAR, momentum_pct_per_day DOUBLE, volatility_pct DOUBLE, trend_efficiency DOUBLE, "
    "volume_ratio DOUBLE, confidence_pct DOUBLE, volatility_level VARCHAR, "
    "PRIMARY KEY (instrument, ts))",
    "CREATE TABLE IF NOT EXISTS level_results (level INTEGER NOT NULL, asset VARCHAR NOT NULL, "
    "run_id VARCHAR, created_at TIMESTAMPTZ, result JSON NOT NULL)",
    # Validated bars at every configured interval (the fetched one and those resampled from it).
    "CREATE TABLE IF NOT EXISTS validated_bars_by_interval (instrument VARCHAR NOT NULL, "
    f"interval VARCHAR NOT NULL, {_BAR_COLUMNS}, PRIMARY KEY (instrument, interval, ts))",
    # Per instrument and UTC day: how far the source was read (fetched_until = the day's end
    # once the day is complete). Written in the same transaction as the bars, so a run killed
    # at any point leaves days that are either complete or fetched again on the next run.
    "CREATE TABLE IF NOT EXISTS ingest_progress (instrument VARCHAR NOT NULL, day DATE NOT NULL, "
    "source VARCHAR NOT NULL, bars INTEGER NOT NULL, fetched_until TIMESTAMPTZ NOT NULL, "
    "fetched_at TIMESTAMPTZ NOT NULL, run_id VARCHAR, PRIMARY KEY (instrument, day))",
    # Per bar partition: what its last passing validation saw (``core.data.partition_state``), so a
    # cycle requests only partitions whose bars or rules changed.
    "CREATE TABLE IF NOT EXISTS partition_state (instrument VARCHAR NOT NULL, "
    "window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL, source VARCHAR NOT NULL, "
    "raw_fingerprint VARCHAR NOT NULL, rules_key VARCHAR NOT NULL, rows INTEGER NOT NULL, "
    "validated_at TIMESTAMPTZ NOT NULL, run_id VARCHAR, PRIMARY KEY (instrument, window_start))",
)
_DAY = timedelta(days=1)


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> pl.DataFrame:
    frame = pl.from_arrow(con.sql(sql, params=params).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def _within(query: str, params: list[Any], start: datetime | None, end: datetime | None) -> str:
    """``query`` narrowed to ``start <= ts < end`` (each bound only when given); the bound
    values are appended to ``params``."""
    if start is not None:
        query += " AND ts >= ?"
        params.append(start)
    if end is not None:
        query += " AND ts < ?"
        params.append(end)
    return query


class WarehouseResource(ConfigurableResource):
    """DuckDB file holding every table of the data flow.

    ``lock_timeout_s`` is how long a connection waits while another process holds the file.
    """

    path: str
    lock_timeout_s: float = 120.0

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection with the schema in place and UTC as time zone; waits for
        the file lock while another process holds it (see ``connect_waiting``). Inside
        ``session`` it is a cursor of the session's connection (no new open of the file)."""
        held = open_sessions().get(self.path)
        if held is not None:
            # A cursor of the held connection: the same open file, its own pending results.
            cursor = held.cursor()
            try:
                cursor.execute("SET TimeZone = 'UTC'")
                yield cursor
            finally:
                cursor.close()
            return
        with self._new_connection() as con:
            yield con

    @contextmanager
    def session(self) -> Iterator[None]:
        """Hold one connection for every call inside (on this thread), instead of one each.

        Opening and closing the file costs about 20 ms, so a burst of reads (a level's bars and
        regimes of every instrument) shares one. Only for short bursts: while it is open, other
        processes wait for the file. Nested sessions share the outer one.
        """
        sessions = open_sessions()
        if self.path in sessions:
            yield
            return
        with self._new_connection() as con:
            sessions[self.path] = con
            try:
                yield
            finally:
                del sessions[self.path]

    @contextmanager
    def _new_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = connect_waiting(self.path, self.lock_timeout_s)
        try:
            con.execute("SET TimeZone = 'UTC'")
            for ddl in _DDL:
                con.execute(ddl)
            yield con
        finally:
            con.close()

    def _replace(
        self, table: str, instrument: str, where: str, params: list[Any], frame: pl.DataFrame
    ) -> int:
        """Delete the rows matching ``where`` and insert ``frame``, in one transaction."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {table} WHERE instrument = ? AND {where}", params)
                if frame.height:
                    con.register("incoming", frame.with_columns(instrument=pl.lit(instrument)))
                    cols = ", ".join(["instrument", *frame.columns])
                    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM incoming")
                    con.unregister("incoming")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return frame.height

    def replace_window(
        self,
        table: str,
        instrument: str,
        start: datetime,
        end: datetime,
        frame: pl.DataFrame,
    ) -> int:
        """Replace the rows of ``instrument`` with ``start <= ts < end`` by ``frame``."""
        return self._replace(
            table, instrument, "ts >= ? AND ts < ?", [instrument, start, end], frame
        )

    def read_bars(
        self,
        table: str,
        instrument: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        """Bars of ``instrument`` from ``table`` in the OHLCV schema, sorted by ts."""
        query = f"SELECT ts, open, high, low, close, volume FROM {table} WHERE instrument = ?"
        params: list[Any] = [instrument]
        query = _within(query, params, start, end)
        with self.connect() as con:
            frame = _query(con, query + " ORDER BY ts", params)
        return frame.cast(OHLCV_SCHEMA)  # pyright: ignore[reportArgumentType]

    def store_fetched(
        self,
        instrument: str,
        start: datetime,
        end: datetime,
        frame: pl.DataFrame,
        *,
        source: str,
        run_id: str | None = None,
    ) -> int:
        """Replace the raw bars of ``instrument`` in ``[start, end)`` by ``frame`` and record the
        days it touches as fetched up to ``end``, in one transaction (see ``ingest_progress``).

        Returns the number of bars written; raises ``ValueError`` when a bar lies outside.
        """
        outside = frame.filter((pl.col("ts") < start) | (pl.col("ts") >= end)).height
        if outside:
            raise ValueError(f"{outside} bars of {instrument} lie outside [{start}, {end})")
        days: list[dict[str, Any]] = []
        day = datetime(start.year, start.month, start.day, tzinfo=UTC)
        while day < end:
            days.append({"day": day.date(), "day_start": day, "day_end": day + _DAY})
            day += _DAY
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    "DELETE FROM raw_bars WHERE instrument = ? AND ts >= ? AND ts < ?",
                    [instrument, start, end],
                )
                if frame.height:
                    con.register("incoming", frame.with_columns(instrument=pl.lit(instrument)))
                    cols = ", ".join(["instrument", *OHLCV_SCHEMA])
                    con.execute(f"INSERT INTO raw_bars ({cols}) SELECT {cols} FROM incoming")
                    con.unregister("incoming")
                if days:
                    con.register("touched", pl.DataFrame(days))
                    con.execute(
                        "INSERT OR REPLACE INTO ingest_progress SELECT ?, t.day, ?, count(r.ts), "
                        "least(t.day_end, ?::TIMESTAMPTZ), now(), ? FROM touched t "
                        "LEFT JOIN raw_bars r ON r.instrument = ? AND r.ts >= t.day_start "
                        "AND r.ts < t.day_end GROUP BY t.day, t.day_end",
                        [instrument, source, end, run_id, instrument],
                    )
                    con.unregister("touched")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return frame.height

    def fetch_progress(
        self, instrument: str, start: datetime, end: datetime, *, source: str | None = None
    ) -> dict[date, datetime]:
        """``fetched_until`` per UTC day of ``[start, end)`` that was ever fetched (by
        ``source`` only, when given: days another source delivered do not count)."""
        query = (
            "SELECT day, fetched_until FROM ingest_progress WHERE instrument = ? "
            "AND day >= ? AND day <= ?"
        )
        params: list[Any] = [instrument, start.date(), (end - timedelta(microseconds=1)).date()]
        if source is not None:
            query += " AND source = ?"
            params.append(source)
        frame = self.read_table(query, params)
        return {row["day"]: row["fetched_until"] for row in frame.iter_rows(named=True)}

    def last_bar(
        self,
        table: str,
        instrument: str,
        *,
        before: datetime | None = None,
        at_or_after: datetime | None = None,
        interval: str | None = None,
    ) -> tuple[datetime, float] | None:
        """(ts, close) of the newest bar of ``instrument`` in ``table`` within the bounds, or
        None; ``interval`` selects one interval of ``validated_bars_by_interval``."""
        query = f"SELECT ts, close FROM {table} WHERE instrument = ?"
        params: list[Any] = [instrument]
        if interval is not None:
            query += " AND interval = ?"
            params.append(interval)
        query = _within(query, params, at_or_after, before)
        with self.connect() as con:
            row = con.execute(query + " ORDER BY ts DESC LIMIT 1", params).fetchone()
        return (row[0].astimezone(UTC), float(row[1])) if row else None

    def replace_interval_window(
        self,
        instrument: str,
        interval: str,
        start: datetime,
        end: datetime,
        frame: pl.DataFrame,
    ) -> int:
        """Replace the ``interval`` bars of ``instrument`` in ``[start, end)`` of
        ``validated_bars_by_interval`` by ``frame``."""
        return self._replace(
            "validated_bars_by_interval",
            instrument,
            "interval = ? AND ts >= ? AND ts < ?",
            [instrument, interval, start, end],
            frame.with_columns(interval=pl.lit(interval)),
        )

    def read_bars_by_interval(
        self,
        instrument: str,
        interval: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        """Validated bars of ``instrument`` at ``interval``, in the OHLCV schema, sorted."""
        query = (
            "SELECT ts, open, high, low, close, volume FROM validated_bars_by_interval "
            "WHERE instrument = ? AND interval = ?"
        )
        params: list[Any] = [instrument, interval]
        if start is not None:
            query += " AND ts >= ?"
            params.append(start)
        if end is not None:
            query += " AND ts < ?"
            params.append(end)
        with self.connect() as con:
            frame = _query(con, query + " ORDER BY ts", params)
        return frame.cast(OHLCV_SCHEMA)  # pyright: ignore[reportArgumentType]

    def read_table(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Any read-only query as a polars frame."""
        with self.connect() as con:
            return _query(con, sql, params or [])

    def count(self, table: str, instrument: str | None = None) -> int:
        """Row count of ``table`` (of one instrument when given)."""
        where, params = ("WHERE instrument = ?", [instrument]) if instrument else ("", [])
        with self.connect() as con:
            row = con.execute(f"SELECT count(*) FROM {table} {where}", params).fetchone()
        return int(row[0]) if row else 0

    def record_partition_states(
        self,
        instrument: str,
        start: datetime,
        end: datetime,
        states: list[PartitionState],
        run_id: str | None,
    ) -> None:
        """Replace the partition states of ``instrument`` with a window start in ``[start,
        end)`` by ``states`` (none: the window did not pass, so it stays due for ingest)."""
        frame = pl.DataFrame(
            [
                {
                    "window_start": s.window_start,
                    "window_end": s.window_end,
                    "source": s.source,
                    "raw_fingerprint": s.raw_fingerprint,
                    "rules_key": s.rules_key,
                    "rows": s.rows,
                    "validated_at": datetime.now(UTC),
                    "run_id": run_id,
                }
                for s in states
            ],
            schema={
                "window_start": pl.Datetime("us", "UTC"),
                "window_end": pl.Datetime("us", "UTC"),
                "source": pl.Utf8,
                "raw_fingerprint": pl.Utf8,
                "rules_key": pl.Utf8,
                "rows": pl.Int64,
                "validated_at": pl.Datetime("us", "UTC"),
                "run_id": pl.Utf8,
            },
        )
        self._replace(
            "partition_state",
            instrument,
            "window_start >= ? AND window_start < ?",
            [instrument, start, end],
            frame,
        )

    def partition_states(self, instrument: str) -> dict[datetime, PartitionState]:
        """The recorded state of every bar partition of ``instrument``, by window start."""
        frame = self.read_table(
            "SELECT * EXCLUDE (validated_at, run_id) FROM partition_state WHERE instrument = ?",
            [instrument],
        )
        return {row["window_start"]: PartitionState(**row) for row in frame.iter_rows(named=True)}

    def replace_regimes(self, instrument: str, frame: pl.DataFrame) -> int:
        """Make ``frame`` (sorted by ts) the whole regime history of ``instrument``; returns the
        rows written.

        Only the rows from the first one that differs from the stored history on are deleted
        and inserted again (in one transaction): a cycle that adds a few hours of bars to
        years of them rewrites those hours, not the years (README "Timings").
        """
        stored = self.read_regimes(instrument)
        cut = first_difference(stored, frame)
        if cut is None:
            return 0
        tail = frame.filter(pl.col("ts") >= cut)
        return self._replace("market_regimes", instrument, "ts >= ?", [instrument, cut], tail)

    def read_regimes(self, instrument: str) -> pl.DataFrame:
        """Regime history of ``instrument``, sorted by ts."""
        return self.read_table(
            "SELECT * EXCLUDE (instrument) FROM market_regimes WHERE instrument = ? ORDER BY ts",
            [instrument],
        )

    def save_level_result(self, level: int, asset: str, run_id: str, result: LevelResult) -> None:
        """Append one level's result (its JSON row) for the promotion step and the audit trail."""
        with self.connect() as con:
            con.execute(
                "INSERT INTO level_results VALUES (?, ?, ?, now(), ?)",
                [level, asset, run_id, encode_result_json(result.to_json())],
            )

    def latest_level_result(self, level: int) -> LevelResult | None:
        """The most recent result of ``level``, or None when it never ran."""
        with self.connect() as con:
            row = con.execute(
                "SELECT result FROM level_results WHERE level = ? ORDER BY created_at DESC LIMIT 1",
                [level],
            ).fetchone()
        return LevelResult.from_row(decode_result_json(row[0])) if row else None

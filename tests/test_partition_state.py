"""The pure rule behind "skip unchanged partitions": fingerprints and the stale windows."""

from datetime import UTC, datetime

import polars as pl

from ffe_dagster.core.data.bars import OHLCV_SCHEMA
from ffe_dagster.core.data.partition_state import PartitionState, bars_fingerprint, stale_windows
from ffe_dagster.partitions import split_windows

NOW = datetime(2024, 7, 15, tzinfo=UTC)
MONTHS = [
    (datetime(2024, m, 1, tzinfo=UTC), datetime(2024, m + 1, 1, tzinfo=UTC)) for m in (3, 4, 5, 6)
]


def _bars(closes: list[float | None]) -> pl.DataFrame:
    ts = [datetime(2024, 3, 1, h, tzinfo=UTC) for h in range(len(closes))]
    return pl.DataFrame(
        {"ts": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": closes, "volume": closes},
        schema=OHLCV_SCHEMA,
    )


def test_the_fingerprint_follows_the_content_not_the_layout() -> None:
    bars = _bars([1.0, 1.5, 1.25])
    same = bars.reverse().select(["volume", "close", "ts", "low", "high", "open"])
    assert bars_fingerprint(same) == bars_fingerprint(bars)
    assert bars_fingerprint(bars.with_columns(extra=pl.lit(3))) == bars_fingerprint(bars)
    assert bars_fingerprint(_bars([1.0, 1.5, 1.26])) != bars_fingerprint(bars)  # one close
    assert bars_fingerprint(_bars([1.0, 1.5])) != bars_fingerprint(bars)  # one bar fewer
    # "no volume published" is not a volume of 0
    assert bars_fingerprint(_bars([1.0, None])) != bars_fingerprint(_bars([1.0, 0.0]))
    assert len(bars_fingerprint(bars)) == 64


def _states(fingerprint: str = "f", rules: str = "r") -> dict[datetime, PartitionState]:
    return {a: PartitionState("X", a, b, "files", fingerprint, rules, 1) for a, b in MONTHS}


def _plan(**over):
    args = {
        "fingerprints": {a: "f" for a, _ in MONTHS},
        "states": _states(),
        "rules": "r",
        "now": NOW,
        "materialized": frozenset(a for a, _ in MONTHS),
    }
    return stale_windows("X", MONTHS, **{**args, **over})


def test_nothing_is_due_when_every_closed_window_is_as_validated() -> None:
    plan = _plan()
    assert (plan.stale, plan.unchanged) == ((), 4)


def test_a_change_makes_its_window_and_every_later_one_due() -> None:
    april, may, june = (a for a, _ in MONTHS[1:])
    plan = _plan(fingerprints={**{a: "f" for a, _ in MONTHS}, april: "g"})
    assert plan.stale == (april, may, june)
    assert plan.unchanged == 1
    assert plan.reasons[april] == "bars changed"
    assert plan.reasons[june] == "after a window ingested again"


def test_each_reason_to_ingest_again() -> None:
    march, april, may, june = (a for a, _ in MONTHS)
    assert _plan(rules="r2").reasons[march] == "validation rules changed"
    states = _states()
    del states[may]
    assert _plan(states=states).stale == (may, june)
    assert _plan(states=states).reasons[may] == "never passed validation"
    gone = _plan(materialized=frozenset({march, april}))
    assert gone.reasons[may] == "not materialized in this Dagster instance"
    # A window still open at ``now`` is refreshed every cycle.
    open_june = _plan(now=datetime(2024, 6, 20, tzinfo=UTC))
    assert open_june.stale == (june,)
    assert open_june.reasons[june] == "open window (refreshed every cycle)"
    # A source that could not be read gives no fingerprint: due (raw_bars then names the file).
    assert _plan(fingerprints={}).stale == (march, april, may, june)


def test_split_windows_cuts_at_the_grain() -> None:
    start, end = datetime(2024, 2, 10, tzinfo=UTC), datetime(2024, 4, 5, tzinfo=UTC)
    assert split_windows(start, end, "month") == [
        (start, datetime(2024, 3, 1, tzinfo=UTC)),
        (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)),
        (datetime(2024, 4, 1, tzinfo=UTC), end),
    ]
    monday = datetime(2024, 3, 4, tzinfo=UTC)
    assert split_windows(
        datetime(2024, 3, 6, tzinfo=UTC), datetime(2024, 3, 13, tzinfo=UTC), "week"
    ) == [
        (datetime(2024, 3, 6, tzinfo=UTC), monday.replace(day=11)),
        (monday.replace(day=11), datetime(2024, 3, 13, tzinfo=UTC)),
    ]
    assert split_windows(end, end, "day") == []

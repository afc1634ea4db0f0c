"""Reading what the curriculum and promotion assets need from the warehouse."""

from ffe_dagster.config import Universe
from ffe_dagster.core.backtest.strategies import FileSignals
from ffe_dagster.core.data.bars import interval_to_timedelta
from ffe_dagster.core.study.levels import LevelData, holdout_starts
from ffe_dagster.resources.warehouse import WarehouseResource


def load_level_data(
    warehouse: WarehouseResource,
    universe: Universe,
    holdout_days: int,
    *,
    signals: FileSignals | None = None,
) -> LevelData:
    """Validated bars and regimes of every instrument that has any, with their hold-outs, and
    the ``signals`` of a ``file_signals`` curriculum (``sources.files.curriculum_signals``)."""
    interval = interval_to_timedelta(universe.bar_interval)
    bars = {}
    regimes = {}
    with warehouse.session():
        for inst in universe.instruments:
            frame = warehouse.read_bars("validated_bars", inst.key)
            if frame.height:
                bars[inst.key] = frame
                regimes[inst.key] = warehouse.read_regimes(inst.key)
    if not bars:
        raise ValueError("validated_bars is empty: materialize raw_bars and validated_bars first")
    return LevelData(
        bars=bars,
        regimes=regimes,
        # Each instrument annualized with its own market's bars per year (forex from its schedule).
        periods_per_year={i.key: i.bars_per_year(interval) for i in universe.instruments},
        holdout_start=holdout_starts(bars, holdout_days),
        signals=signals,
    )

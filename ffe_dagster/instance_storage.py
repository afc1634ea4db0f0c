"""The embedded Dagster instance's event log: Dagster's SQLite event log, writing batches at once.

Dagster's ``SqliteEventLogStorage`` stores every event in its own transaction on the run's
database and, for asset events, again on the index database, each through a new connection:
on SQLite every commit is a disk sync, and closing the last connection of a WAL database
checkpoints it. A single-run backfill of N bar partitions emits N "materialization planned" events
when the run is created and N materializations per asset when its step ends; with the default
storage that was most of the first backfill's bookkeeping (README "Partitions").

Dagster hands such events over as one batch when ``DAGSTER_EVENT_BATCH_SIZE`` is set (the CLI and
the Makefile set it; dagster-postgres writes batches natively). ``store_event_batch`` here writes
a batch of one run's asset events in one transaction per database, with the same rows, tags
and asset entries, in the same order, as one ``store_event`` call per event; the other events
of a batch (asset checks planned with the materializations) follow one at a time, as Dagster
stores them.
Configured in ``dagster.yaml``; the files stay where Dagster's default puts them
(``$DAGSTER_HOME/history/runs``), so an existing instance keeps its history.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any

from dagster._config import StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._serdes import ConfigurableClassData

EVENT_BATCH_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = "1000"  # events per batch; a step's materializations come as one batch


def _is_asset_event(event: EventLogEntry) -> bool:
    return (
        event.dagster_event is not None
        and event.dagster_event_type in ASSET_EVENTS
        and event.dagster_event.asset_key is not None
    )


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` under ``<dagster_home>/history/runs`` (Dagster's default place)
    that stores a batch of one run's asset events in one transaction per database."""

    def __init__(self, dagster_home: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(os.path.join(dagster_home, "history", "runs", ""), inst_data=inst_data)

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {"dagster_home": StringSource}

    @classmethod
    def from_config_value(  # pyright: ignore[reportIncompatibleMethodOverride]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "BatchedSqliteEventLogStorage":
        return cls(str(config_value["dagster_home"]), inst_data=inst_data)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store ``events``: one run's asset events in one transaction on the run's database
        and one on the index database, then any other event one at a time (a run's planned
        asset checks come in the same batch as its planned materializations)."""
        assets = [e for e in events if _is_asset_event(e)]
        if len({e.run_id for e in events}) != 1 or len(assets) < 2:
            for event in events:
                self.store_event(event)
            return
        with self.run_connection(assets[0].run_id) as conn:
            for event in assets:
                conn.execute(self.prepare_insert_event(event))
        # Mirrored in the cross-run index, as ``SqliteEventLogStorage.store_event`` does for
        # each asset event: the event row, its indexed tags, the asset's entry.
        with self.index_transaction() as conn:
            ids: list[int] = []
            for event in assets:
                with db_result(conn, self.prepare_insert_event(event)) as result:
                    ids.append(int(result.inserted_primary_key[0]))
            self._store_asset_event_tags(conn, assets, ids)
            for event, event_id in zip(assets, ids, strict=True):
                self._store_asset_event(conn, event, event_id)
        for event in events:
            if not _is_asset_event(event):
                self.store_event(event)

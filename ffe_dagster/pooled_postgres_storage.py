"""The production Dagster instance's storages: dagster-postgres's, keeping their connections.

dagster-postgres opens every run, event-log and schedule storage with SQLAlchemy's ``NullPool``
("to prevent accumulating connections per DagsterInstance"), so each storage call connects to
PostgreSQL again: a new server process, authentication, and a round trip, about 4.4 ms on this
project's 2-core machine against 0.07 ms for the query itself. A backfill's run stores hundreds
of events and reads the run back as many times, so the connects were a large part of Dagster's
bookkeeping on PostgreSQL (README "Timings").

The classes below are dagster-postgres's own with a pooled engine, as dagster-postgres itself
builds for its webserver (``optimize_for_webserver``): one kept connection per storage (more only
while calls overlap), checked with SQLAlchemy's pre-ping before use, so one the server has
dropped is replaced instead of failing the call, and closed when the storage is disposed
(``DagsterInstance.dispose`` disposes the run and event-log storages; the schedule storage's
connection closes when the instance is collected). A process with one Dagster instance holds at
most three idle connections to the Dagster database.
Configured in ``deploy/dagster.yaml``.
"""

from collections.abc import Mapping
from typing import Any, Self

import sqlalchemy as db
from dagster._serdes import ConfigurableClassData
from dagster_postgres import (
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

# Idle connections kept per storage and process, and how many more while calls overlap.
POOL_SIZE = 1
MAX_OVERFLOW = 4
# A kept connection older than this is replaced (server-side idle timeouts, failovers).
POOL_RECYCLE_S = 3600


def _pooled_engine(postgres_url: str, token_provider: Any) -> db.engine.Engine:
    # The same engine arguments as dagster-postgres's, but for the pool.
    return create_pg_engine(
        postgres_url,
        token_provider,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_recycle=POOL_RECYCLE_S,
        pool_pre_ping=True,
    )


def _settings(config_value: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class _KeptConnections:
    """Mixed in before a dagster-postgres storage: its engine replaced by the pooled one, and
    built from ``dagster.yaml`` as this class (dagster-postgres's ``from_config_value`` names its
    own class)."""

    postgres_url: str
    _token_provider: Any
    _engine: db.engine.Engine

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # postgres_url and _token_provider: set by dagster-postgres's __init__
        self._engine = _pooled_engine(self.postgres_url, self._token_provider)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data, **_settings(config_value))

    def dispose(self) -> None:
        """Dispose of the storage as dagster-postgres does, then close its kept connections
        (dagster-postgres's ``dispose`` leaves the engine alone: a ``NullPool`` holds none)."""
        super().dispose()  # pyright: ignore[reportAttributeAccessIssue] - the storage's, after this mixin
        self._engine.dispose()


# The ignores: dagster-postgres types from_config_value as returning its own class, and
# _KeptConnections's returns this subclass of it.
class PooledPostgresRunStorage(  # pyright: ignore[reportIncompatibleMethodOverride]
    _KeptConnections, PostgresRunStorage
):
    """dagster-postgres's run storage with its connections kept (module docstring)."""


class PooledPostgresEventLogStorage(  # pyright: ignore[reportIncompatibleMethodOverride]
    _KeptConnections, PostgresEventLogStorage
):
    """dagster-postgres's event-log storage with its connections kept (module docstring)."""


class PooledPostgresScheduleStorage(  # pyright: ignore[reportIncompatibleMethodOverride]
    _KeptConnections, PostgresScheduleStorage
):
    """dagster-postgres's schedule storage with its connections kept (module docstring)."""

"""Optuna's journal on PostgreSQL: production's studies, held in memory, written a block at a time.

Optuna's RDB storage keeps a study in the database, so every ask and tell reads and writes it
there, one transaction per parameter, value and attribute: +61 ms per TPE trial over the
in-memory storage on PostgreSQL, against +2 ms for this journal and +7 ms for the journal file
(``benchmarks/results/storage.md``, 2026-12-03). A journal keeps the study
in the process's memory; the database only holds its append-only log of operations, and a batch's
asks (or its tells) are one INSERT (``journal_batches.BatchedJournalStorage``).

**Streams.** Each level study and its walk-forward studies are one *stream* of log rows of their
own (``ffe_optuna_journal``: stream, log number, the log as Optuna's JSON). A process that opens a
study replays its stream only, never the log of every study ever run, so opening a study costs the
same after a year of cycles as on the first day. Log numbers are dense from 0 in each stream,
which Optuna's replay relies on; a read that finds a gap raises instead of replaying it.

**Locks.** A block holds a session-level advisory lock keyed by its stream
(``pg_advisory_lock``) from reading the stream to writing its logs, and an append outside a block
takes the same lock for its transaction, so writers of one stream never interleave and the
trial ids every process replays agree. The server drops the lock of a killed process with its
session. A row written without the lock (another program) collides with the block's log numbers
(primary key): the block fails with ``ConcurrentJournalWriteError`` and writes nothing.

**Heartbeats.** A trial's heartbeat is a row (stream, trial id, the server's time). Beats recorded
inside a block are written in the block's transaction, so a beat never names a trial the journal
does not hold. A RUNNING trial whose beat is older than the grace period belongs to a dead worker:
``optuna.storages.fail_stale_trials`` fails it (once: a second worker's FAIL of the same trial is
refused by the replay) and the stale-trial callback queues its retry, as on RDB storages.
"""

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import cache
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from ffe_dagster.config.environment import DATABASE_JOURNAL_PREFIX
from ffe_dagster.resources.journal_batches import (
    BatchedJournalStorage,
    BatchingJournalBackend,
    ConcurrentJournalWriteError,
)

StaleTrialCallback = Callable[[optuna.Study, FrozenTrial], None]

_METADATA = MetaData()
_LOGS = Table(
    "ffe_optuna_journal",
    _METADATA,
    Column("stream", Text, primary_key=True),
    Column("log_number", BigInteger, primary_key=True, autoincrement=False),
    Column("log", Text, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
_BEATS = Table(
    "ffe_optuna_journal_heartbeats",
    _METADATA,
    Column("stream", Text, primary_key=True),
    Column("trial_id", BigInteger, primary_key=True, autoincrement=False),
    Column("beat", DateTime(timezone=True), nullable=False),
)


def is_postgres_journal_url(url: str) -> bool:
    """True for ``journal+postgresql+psycopg2://…``: Optuna's journal in a PostgreSQL database."""
    return url.startswith(DATABASE_JOURNAL_PREFIX + "postgresql")


def database_url(url: str) -> str:
    """The SQLAlchemy URL of the database under a ``journal+postgresql…`` URL."""
    return url.removeprefix(DATABASE_JOURNAL_PREFIX)


def stream_lock_key(name: str) -> int:
    """The key of stream ``name``'s advisory lock: whoever holds ``pg_advisory_lock(key)``
    pauses the stream's writers at their next block (a consistent copy, a test's fault)."""
    # pg_advisory_lock takes a signed 64-bit key; a stable hash, so every process agrees.
    digest = hashlib.blake2b(f"ffe_optuna_journal\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_SCHEMA_KEY = stream_lock_key("\0schema")


class JournalGapError(RuntimeError):
    """A stream's stored log numbers are not dense: replaying them would give wrong trial ids."""


class PostgresJournalBackend(BatchingJournalBackend):
    """One stream of Optuna journal logs in PostgreSQL, appended a block at a time."""

    def __init__(self, engine: Engine, stream: str) -> None:
        self._engine = engine
        self._stream = stream
        self._key = stream_lock_key(stream)
        self._pending: list[dict[str, Any]] | None = None
        self._logs_stored = 0
        self._lock_connection: Connection | None = None
        # The heartbeat thread records beats while the main thread may be in a block.
        self._state = threading.Lock()
        self._beats: set[int] = set()

    @property
    def in_batch(self) -> bool:
        """True between ``begin`` and ``commit``."""
        return self._pending is not None

    @contextmanager
    def batch_lock(self) -> Iterator[None]:
        """The stream's advisory lock, held by a connection of its own for the whole block."""
        with self._engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
            connection.commit()  # a session lock outlives the transaction that took it
            self._lock_connection = connection
            try:
                yield
            finally:
                self._lock_connection = None
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                    connection.commit()
                except DBAPIError:
                    # The connection is lost, and the server dropped the lock with its session;
                    # what made the block fail, if anything, is the error that propagates.
                    connection.invalidate()

    def begin(self, logs_stored: int) -> None:
        """Start buffering; the caller holds the batch lock and has read ``logs_stored`` logs."""
        with self._state:
            self._pending = []
            self._logs_stored = logs_stored

    def _stored_logs(self, start: int, stop: int | None) -> list[dict[str, Any]]:
        query = select(_LOGS.c.log_number, _LOGS.c.log).where(
            _LOGS.c.stream == self._stream, _LOGS.c.log_number >= start
        )
        if stop is not None:
            query = query.where(_LOGS.c.log_number < stop)
        with self._engine.connect() as connection:
            rows = connection.execute(query.order_by(_LOGS.c.log_number)).all()
        for expected, (number, _) in enumerate(rows, start):
            if number != expected:
                raise JournalGapError(
                    f"Optuna journal stream {self._stream!r}: log {expected} is missing "
                    f"(found {number}); a row was deleted or written without the stream's lock"
                )
        return [json.loads(log) for _, log in rows]

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        """The stream's logs from ``log_number_from`` on, then the block's unwritten ones."""
        pending = self._pending
        if pending is None:
            yield from self._stored_logs(log_number_from, None)
            return
        if log_number_from < self._logs_stored:
            yield from self._stored_logs(log_number_from, self._logs_stored)
        yield from pending[max(0, log_number_from - self._logs_stored) :]

    def _rows(self, start: int, logs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "stream": self._stream,
                "log_number": number,
                "log": json.dumps(log, separators=(",", ":")),
            }
            for number, log in enumerate(logs, start)
        ]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Inside a block: keep the logs for ``commit``; outside: append them now, under the
        stream's lock for the transaction."""
        with self._state:
            if self._pending is not None:
                self._pending.extend(logs)
                return
        with self._engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._key})
            start = connection.execute(
                select(func.coalesce(func.max(_LOGS.c.log_number) + 1, 0)).where(
                    _LOGS.c.stream == self._stream
                )
            ).scalar_one()
            connection.execute(insert(_LOGS), self._rows(int(start), logs))

    def commit(self) -> None:
        """Write the block's logs, and the beats recorded in it, in one transaction.

        Raises :class:`ConcurrentJournalWriteError`, writing nothing, when a row with one of the
        block's log numbers exists (written without the stream's lock)."""
        with self._state:
            pending, self._pending = self._pending, None
            beats, self._beats = self._beats, set()
        if not pending and not beats:
            return
        connection = self._lock_connection
        if connection is None:
            raise RuntimeError("commit outside batch_lock")
        try:
            if pending:
                connection.execute(insert(_LOGS), self._rows(self._logs_stored, pending))
            if beats:
                self._write_beats(connection, beats)
            connection.commit()
        except IntegrityError as exc:
            connection.rollback()
            raise ConcurrentJournalWriteError(
                f"Optuna journal stream {self._stream!r}: another writer appended without the "
                "stream's lock while this one wrote a batch; the batch was not written. Run "
                "again: the study resumes from its stored trials."
            ) from exc

    def _write_beats(self, connection: Connection, trial_ids: set[int]) -> None:
        statement = pg_insert(_BEATS).values(
            [
                {"stream": self._stream, "trial_id": trial_id, "beat": func.now()}
                for trial_id in sorted(trial_ids)
            ]
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[_BEATS.c.stream, _BEATS.c.trial_id], set_={"beat": func.now()}
            )
        )

    def record_heartbeat(self, trial_id: int) -> None:
        """Beat for ``trial_id`` now, or with the block's logs when a block is open."""
        with self._state:
            if self._pending is not None:
                self._beats.add(trial_id)
                return
        with self._engine.begin() as connection:
            self._write_beats(connection, {trial_id})

    def stale(self, trial_ids: Sequence[int], grace_period_s: int) -> list[int]:
        """Those of ``trial_ids`` whose last beat is older than ``grace_period_s`` by the
        server's clock (a trial that never beat is not stale, as on Optuna's RDB storage)."""
        if not trial_ids:
            return []
        query = select(_BEATS.c.trial_id).where(
            _BEATS.c.stream == self._stream,
            _BEATS.c.trial_id.in_(list(trial_ids)),
            _BEATS.c.beat < func.now() - timedelta(seconds=grace_period_s),
        )
        with self._engine.connect() as connection:
            return sorted(connection.execute(query).scalars())


class PostgresJournalStorage(BatchedJournalStorage, BaseHeartbeat):
    """A batched Optuna journal storage on one PostgreSQL stream, with trial heartbeats when
    ``heartbeat_interval`` is set. ``url`` is the database's SQLAlchemy URL (the one errors
    name, with its password hidden)."""

    def __init__(
        self,
        backend: PostgresJournalBackend,
        *,
        url: str,
        heartbeat_interval: int | None,
        grace_period: int,
        stale_trial_callback: StaleTrialCallback | None,
    ) -> None:
        self._postgres = backend
        self.url = url
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback
        super().__init__(backend)

    def record_heartbeat(self, trial_id: int) -> None:
        """Record that the worker evaluating ``trial_id`` is alive."""
        self._postgres.record_heartbeat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return self._postgres.stale([t._trial_id for t in running], self._grace_period)

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between two beats of a live worker; None: no heartbeats."""
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleTrialCallback | None:
        """What runs on each trial failed as stale (the retry)."""
        return self._stale_trial_callback


@cache
def _engine(sql_url: str, connect_timeout_s: int) -> Engine:
    # One engine (and its pool) per database and process, shared by every stream; the tables
    # are created once, under a lock, since several processes may start at once.
    engine = create_engine(
        sql_url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": connect_timeout_s},
    )
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_KEY})
        _METADATA.create_all(connection)
    return engine


def open_postgres_journal(
    url: str,
    stream: str,
    *,
    heartbeat_interval: int | None,
    grace_period: int,
    stale_trial_callback: StaleTrialCallback | None,
    connect_timeout_s: int,
) -> PostgresJournalStorage:
    """The journal storage of ``stream`` in the database of ``url`` (``journal+postgresql…``),
    its tables created when missing, the stream's stored logs replayed."""
    if make_url(database_url(url)).get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL journal URL: {make_url(database_url(url))!r}")
    engine = _engine(database_url(url), connect_timeout_s)
    return PostgresJournalStorage(
        PostgresJournalBackend(engine, stream),
        url=database_url(url),
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        stale_trial_callback=stale_trial_callback,
    )


def journal_streams(url: str, connect_timeout_s: int) -> list[str]:
    """The streams in the database of ``url``, the most recently written first."""
    engine = _engine(database_url(url), connect_timeout_s)
    query = (
        select(_LOGS.c.stream)
        .group_by(_LOGS.c.stream)
        .order_by(func.max(_LOGS.c.written_at).desc(), _LOGS.c.stream)
    )
    with engine.connect() as connection:
        return list(connection.execute(query).scalars())

"""Opening an Optuna storage from its URL: the file and database side of the studies.

``ffe_dagster.core.study.optimize`` takes an opened ``optuna.storages.BaseStorage`` and does no
I/O of its own; this module creates the journal's or SQLite file's folder, connects to the
database and configures trial heartbeats. No dagster here: the dashboard, the cluster launcher,
benchmarks and tests open storages through it too (``OptunaStorageResource`` in
``resources/studies.py`` wraps it for the assets and jobs).
"""

import warnings
from pathlib import Path
from typing import Any

from optuna.exceptions import ExperimentalWarning
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url

from ffe_dagster.core.study.optimize import reachable
from ffe_dagster.resources.journal_postgres import (
    database_url,
    is_postgres_journal_url,
    open_postgres_journal,
)

JOURNAL_SCHEME = "journal:///"
# SQL storages: a live worker beats every 10 s; a trial without a beat for 30 s (three missed
# beats, so one slow commit is not enough) belongs to a dead worker and is failed, then retried
# up to 3 times with the same parameters (a set that kills its worker every time is given up).
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30
MAX_RETRY = 3
# A black-holed database host must fail a call in seconds, not hang a worker for minutes.
CONNECT_TIMEOUT_S = 10


def journal_path(url: str) -> Path:
    """The file of a ``journal:///path`` URL."""
    return Path("/" + url.removeprefix(JOURNAL_SCHEME).lstrip("/"))


def open_storage(
    url: str,
    *,
    stream: str | None = None,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retry: int | None = MAX_RETRY,
) -> BaseStorage:
    """An Optuna storage for ``url``.

    ``journal:///path/file.log`` is Optuna's append-only journal file (the local default: several
    times faster than SQLite per trial, safe across processes through a file lock).
    ``journal+postgresql+psycopg2://…`` is the journal of ``stream`` (required: a level study's
    name) in a PostgreSQL database, batched and with heartbeats (``journal_postgres``); any other
    URL is an SQLAlchemy URL for Optuna's RDB storage (SQLite, PostgreSQL). On PostgreSQL and RDB
    storages workers beat every ``heartbeat_interval`` seconds (None: no heartbeats) and a
    stale-trial callback re-enqueues a trial whose worker stopped beating for ``grace_period``
    seconds (at most ``max_retry`` times; None: always). Connections are pinged before use, so a
    process survives a database restart between two calls. A local file's folder is created.
    Raises :class:`~ffe_dagster.core.study.optimize.StorageUnavailableError` when the database
    cannot be reached.
    """
    if url.startswith(JOURNAL_SCHEME):
        # Optuna's journal storage has no heartbeats: the trials of a worker killed on a shared
        # journal study stay RUNNING (no harm to the count; see StudyConfig.fail_stale_running).
        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if is_postgres_journal_url(url):
        if stream is None:
            raise ValueError("a PostgreSQL journal URL needs the stream (the level study's name)")
        with warnings.catch_warnings(), reachable(database_url(url)):
            warnings.filterwarnings("ignore", category=ExperimentalWarning)
            beating = heartbeat_interval is not None
            return open_postgres_journal(
                url,
                stream,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period if grace_period is not None else GRACE_PERIOD_S,
                stale_trial_callback=(
                    RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if beating else None
                ),
                connect_timeout_s=CONNECT_TIMEOUT_S,
            )
    if "://" not in url:
        raise ValueError(f"not an Optuna storage URL: {url!r} (journal:///path or an SQL URL)")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if make_url(url).get_driver_name() == "psycopg2":
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    with warnings.catch_warnings(), reachable(url):
        # The heartbeat API is experimental in Optuna, and used here on purpose.
        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period if heartbeat_interval is not None else None,
            heartbeat_stale_trial_callback=retry if heartbeat_interval is not None else None,
        )

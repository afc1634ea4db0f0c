"""Connections to the DuckDB warehouse file: waiting while another process holds its lock, and
the connections a thread keeps open for a burst of reads (``WarehouseResource.session``)."""

import logging
import random
import threading
import time

import duckdb
from dagster import get_dagster_logger

# DuckDB's message when another process holds the file (an IOException); any other error of
# ``duckdb.connect`` is a real fault and is raised at once.
_LOCK_HELD = "Conflicting lock is held"
_FIRST_BACKOFF_S = 0.01
_MAX_BACKOFF_S = 0.1  # short: a writer that polls rarely would lose the lock to a busy one
_LOG_EVERY_S = 10.0

_log = get_dagster_logger(__name__)
# The connection a thread holds open per warehouse file inside ``WarehouseResource.session``.
_sessions = threading.local()


def open_sessions() -> dict[str, duckdb.DuckDBPyConnection]:
    """This thread's session connections, by warehouse file (``WarehouseResource.session``)."""
    if not hasattr(_sessions, "by_path"):
        _sessions.by_path = {}
    return _sessions.by_path


class WarehouseLockTimeoutError(TimeoutError):
    """Another process held the warehouse file for longer than ``lock_timeout_s``."""


def _lock_held(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.IOException) and _LOCK_HELD in str(exc)


def connect_waiting(path: str, timeout_s: float) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(path)``, waiting up to ``timeout_s`` while another process holds the
    file's lock (retried with a growing, jittered backoff; the wait is logged).

    Raises ``WarehouseLockTimeoutError`` naming the file and the time waited when the lock never
    comes free; any other error is raised as it is.
    """
    started = time.monotonic()
    backoff = _FIRST_BACKOFF_S
    logged_at: float | None = None
    while True:
        try:
            con = duckdb.connect(path)
        except duckdb.Error as exc:
            if not _lock_held(exc):
                raise
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise WarehouseLockTimeoutError(
                    f"warehouse file {path} stayed locked by another process for {waited:.1f} s "
                    f"(lock_timeout_s={timeout_s:g}); another run or process is writing it. "
                    f"DuckDB said: {exc}"
                ) from exc
            if logged_at is None or waited - logged_at >= _LOG_EVERY_S:
                logged_at = waited
                # A short wait is routine under contention; a long one deserves a warning.
                _log.log(
                    logging.WARNING if waited >= _LOG_EVERY_S else logging.INFO,
                    "waiting for the lock on warehouse file %s (held by another process, "
                    "waited %.1f s of %g s): %s",
                    path,
                    waited,
                    timeout_s,
                    exc,
                )
            # Jitter keeps two waiting processes from retrying in lockstep.
            time.sleep(min(backoff * random.uniform(0.5, 1.5), timeout_s - waited))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            continue
        if logged_at is not None:
            _log.info(
                "got the lock on warehouse file %s after %.1f s", path, time.monotonic() - started
            )
        return con

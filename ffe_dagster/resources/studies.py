"""Where Optuna keeps its studies: a journal file by default, a journal in PostgreSQL in production.

Both journals are written a batch at a time (``journal_batches.BatchedJournalStorage``): the
operations of one ask (or one tell) of a whole batch of trials are kept in memory and appended
at once when the block ends. ``journal_file`` holds every study in one file; ``journal_postgres``
holds each level study, with its walk-forward studies, in a stream of its own. Any other SQL URL
opens Optuna's RDB storage (``optuna_storage.open_storage``).
"""

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from dagster import ConfigurableResource
from optuna.storages import BaseStorage

from ffe_dagster.resources.journal_batches import BatchedJournalStorage
from ffe_dagster.resources.journal_file import batched_journal_file
from ffe_dagster.resources.journal_postgres import is_postgres_journal_url
from ffe_dagster.resources.optuna_storage import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    JOURNAL_SCHEME,
    journal_path,
    open_storage,
)

# The journals this process keeps open, most recently used last. Each holds its studies in
# memory and re-reads only what others appended since; a new one replays the whole journal. The
# bound matters for a long-lived process (the daemon's runs, a code server), which meets new
# level studies, and so new PostgreSQL streams, every cycle.
_KEPT: OrderedDict[tuple[str | int, ...], BatchedJournalStorage] = OrderedDict()
_KEPT_MAX = 16
_kept_lock = threading.Lock()


def _kept(
    key: tuple[str | int, ...], opener: Callable[[], BatchedJournalStorage]
) -> BatchedJournalStorage:
    # A broken storage (its memory ahead of its journal) is replaced, never used again.
    with _kept_lock:
        storage = _KEPT.get(key)
        if storage is None or storage.broken:
            storage = opener()
        _KEPT[key] = storage
        _KEPT.move_to_end(key)
        while len(_KEPT) > _KEPT_MAX:
            _KEPT.popitem(last=False)
        return storage


def _journal(path: str) -> BatchedJournalStorage:
    # One storage per file and process (the levels of a run share the file); a file deleted and
    # made again (another inode) gets a new storage.
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).touch()
    return _kept((path, os.stat(path).st_ino), lambda: batched_journal_file(Path(path)))


def _stream(url: str, stream: str, heartbeat_s: int, grace_s: int) -> BatchedJournalStorage:
    def opener() -> BatchedJournalStorage:
        storage = open_storage(
            url, stream=stream, heartbeat_interval=heartbeat_s, grace_period=grace_s
        )
        assert isinstance(storage, BatchedJournalStorage)  # a journal+postgresql URL
        return storage

    return _kept((url, stream, heartbeat_s, grace_s), opener)


class OptunaStorageResource(ConfigurableResource):
    """An Optuna storage URL: ``journal:///path`` (a journal file), ``journal+postgresql+psycopg2://``
    (a journal in PostgreSQL, a stream per level study) or an SQLAlchemy URL (Optuna's RDB
    storage); a study re-created with the same name resumes from it. Both journals are written a
    batch at a time. On PostgreSQL a worker beats every ``heartbeat_interval_s`` seconds and a
    trial silent for ``grace_period_s`` is failed and retried (``open_storage``)."""

    url: str
    heartbeat_interval_s: int = HEARTBEAT_INTERVAL_S
    grace_period_s: int = GRACE_PERIOD_S

    def storage(self, stream: str) -> BaseStorage:
        """The storage that holds the level study named ``stream`` and its walk-forward studies
        (a journal file or an RDB storage holds every study, and ignores ``stream``), opened,
        with its folder created when it is a local file."""
        if self.url.startswith(JOURNAL_SCHEME):
            return _journal(str(journal_path(self.url)))
        if is_postgres_journal_url(self.url):
            return _stream(self.url, stream, self.heartbeat_interval_s, self.grace_period_s)
        return open_storage(
            self.url,
            heartbeat_interval=self.heartbeat_interval_s,
            grace_period=self.grace_period_s,
        )

"""Where Optuna keeps its studies: a journal file by default, PostgreSQL in production.

The journal file is Optuna's own format, written in batches: ``BatchedJournalStorage.batch``
keeps the operations of one ask (or one tell) of a whole batch of trials in memory and appends
them with one write and one ``fsync`` when the block ends. Optuna's plain ``JournalFileBackend``
locks, appends, ``fsync``s and re-reads the file once per operation, about ten per trial.

Several processes may share the file (study workers, a level asset): every batched storage holds
an OS lock on ``<file>.batch.flock`` for the block, so the blocks of different processes do not
interleave, and the OS drops the lock of a killed process at once. Plain Optuna writers (the
dashboard, ``optuna_storage.open_storage``) take only Optuna's own lock; one that appends inside a
block is detected when the block is written, which then fails with
:class:`ConcurrentJournalWriteError` and writes nothing (the in-memory trial ids would no longer
match the file's).

Crash safety: an operation is durable once its block ends. A process killed inside a block loses
that block's operations, nothing else: killed while asking, the file holds none of the batch's
trials and the resumed study asks new ones; killed while telling, the batch's trials stay RUNNING
and the resumed study fails them and runs replacements (``StudyConfig.fail_stale_running``),
exactly as after a kill during the evaluation (``tests/test_optimization_journal.py``).
"""

import fcntl
import json
import os
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend

from ffe_dagster.resources.optuna_storage import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    JOURNAL_SCHEME,
    journal_path,
    open_storage,
)


class ConcurrentJournalWriteError(RuntimeError):
    """A writer without the batch lock appended to the journal inside a batch."""


class BatchedJournalFileBackend(JournalFileBackend):
    """Optuna's journal file backend whose appends inside a batch wait for the batch's end.

    Inside a batch no other batched writer can append (the batch lock), so the file's logs are
    read once at the start and the batch's own logs are served from memory.
    """

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._pending: list[dict[str, Any]] | None = None
        self._logs_in_file = 0
        self._batch_lock_path = file_path + ".batch.flock"

    @property
    def in_batch(self) -> bool:
        """True between ``begin`` and ``commit``."""
        return self._pending is not None

    @contextmanager
    def batch_lock(self) -> Iterator[None]:
        """The OS lock every batched writer of this file holds while it writes (released by the
        OS when the process dies, so a killed worker never blocks the next one)."""
        fd = os.open(self._batch_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def begin(self, logs_in_file: int) -> None:
        """Start buffering; the caller holds the batch lock and has read ``logs_in_file`` logs."""
        self._pending = []
        self._logs_in_file = logs_in_file

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """The logs from ``log_number_from`` on: the file's, then the batch's unwritten ones."""
        pending = self._pending
        if pending is None:
            yield from super().read_logs(log_number_from)
            return
        if log_number_from < self._logs_in_file:
            for number, log in enumerate(super().read_logs(log_number_from), log_number_from):
                if number >= self._logs_in_file:
                    break  # appended by a writer without the batch lock: commit refuses
                yield log
        yield from pending[max(0, log_number_from - self._logs_in_file) :]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Inside a batch: keep the logs for ``commit``; outside: Optuna's locked append."""
        if self._pending is not None:
            self._pending.extend(logs)
            return
        with self.batch_lock():
            super().append_logs(logs)

    def commit(self) -> None:
        """Append the batch's logs with one write and one fsync, under Optuna's file lock too.

        Raises :class:`ConcurrentJournalWriteError`, writing nothing, when the file grew since the
        batch began."""
        pending, self._pending = self._pending, None
        if not pending:
            return
        start = self._log_number_offset.get(self._logs_in_file)
        lines = [json.dumps(log, separators=(",", ":")).encode() + b"\n" for log in pending]
        self._lock.acquire()
        try:
            size = os.stat(self._file_path).st_size
            if start is None or size != start:
                raise ConcurrentJournalWriteError(
                    f"{self._file_path}: another process appended to the Optuna journal while "
                    f"this one wrote a batch ({size - (start or 0)} bytes it did not lock for); "
                    "the batch was not written. Run again: the study resumes from its stored "
                    "trials."
                )
            with open(self._file_path, "ab") as f:
                f.write(b"".join(lines))
                f.flush()
                os.fsync(f.fileno())
        finally:
            self._lock.release()
        # The offsets of the new lines, so the next read seeks instead of scanning the file.
        offset = start
        for number, line in enumerate(lines, start=self._logs_in_file):
            offset += len(line)
            self._log_number_offset[number + 1] = offset


class BatchedJournalStorage(JournalStorage):
    """A journal storage whose ``batch()`` writes a whole batch of trial operations at once
    (``ffe_dagster.core.study.optimize.run_study`` asks and tells each batch inside one)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = BatchedJournalFileBackend(str(path))
        self.broken = False
        super().__init__(self._file)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Buffer this storage's writes until the block ends, holding the batch lock meanwhile.

        The logs of the block are written even when it raises: the in-memory study already
        holds them, and a study whose memory and file disagreed would hand out wrong ids.
        """
        if self._file.in_batch:
            yield  # nested: the outer block writes
            return
        with self._file.batch_lock():
            with self._thread_lock:
                self._sync_with_backend()  # what other processes wrote before the lock
                self._file.begin(self._replay_result.log_number_read)
            try:
                yield
            finally:
                try:
                    self._file.commit()
                except ConcurrentJournalWriteError:
                    self.broken = True  # its memory is ahead of the file: never used again
                    raise


@cache
def _cached_journal(path: str, inode: int) -> BatchedJournalStorage:
    return BatchedJournalStorage(Path(path))


def _journal(path: str) -> BatchedJournalStorage:
    # One storage per file and process: each new JournalStorage replays the whole file, and the
    # levels of a run share the file. The cached one re-reads only what others appended since;
    # a file deleted and made again (another inode) gets a new storage.
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).touch()
    storage = _cached_journal(path, os.stat(path).st_ino)
    if storage.broken:
        _cached_journal.cache_clear()
        storage = _cached_journal(path, os.stat(path).st_ino)
    return storage


class OptunaStorageResource(ConfigurableResource):
    """An Optuna storage URL (``journal:///path`` or SQLAlchemy); a study re-created with the same
    name resumes from it. A journal file is written a batch at a time (``BatchedJournalStorage``).
    On SQL storages a worker beats every ``heartbeat_interval_s`` seconds and a trial silent for
    ``grace_period_s`` is failed and retried (``open_storage``)."""

    url: str
    heartbeat_interval_s: int = HEARTBEAT_INTERVAL_S
    grace_period_s: int = GRACE_PERIOD_S

    def storage(self) -> BaseStorage:
        """The storage, opened, with its folder created when it is a local file."""
        if self.url.startswith(JOURNAL_SCHEME):
            return _journal(str(journal_path(self.url)))
        return open_storage(
            self.url,
            heartbeat_interval=self.heartbeat_interval_s,
            grace_period=self.grace_period_s,
        )

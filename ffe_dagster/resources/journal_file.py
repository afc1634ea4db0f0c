"""The local default's Optuna journal: Optuna's own journal file, written a block at a time.

Several processes may share the file (study workers, a level asset): every batched writer holds
an OS lock on ``<file>.batch.flock`` for the block, so the blocks of different processes do not
interleave, and the OS drops the lock of a killed process at once. Plain Optuna writers (the
dashboard, ``optuna_storage.open_storage``) take only Optuna's own lock; one that appends inside a
block is detected when the block is written, which then fails with
:class:`~ffe_dagster.resources.journal_batches.ConcurrentJournalWriteError` and writes nothing (the
in-memory trial ids would no longer match the file's).
"""

import fcntl
import json
import os
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend

from ffe_dagster.resources.journal_batches import (
    BatchedJournalStorage,
    BatchingJournalBackend,
    ConcurrentJournalWriteError,
)


class BatchedJournalFileBackend(JournalFileBackend, BatchingJournalBackend):
    """Optuna's journal file backend whose appends inside a block wait for the block's end,
    then go to the file with one write and one ``fsync``."""

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

    def begin(self, logs_stored: int) -> None:
        """Start buffering; the caller holds the batch lock and has read ``logs_stored`` logs."""
        self._pending = []
        self._logs_in_file = logs_stored

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


def batched_journal_file(path: Path) -> BatchedJournalStorage:
    """A batched journal storage on the file at ``path`` (its folder created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return BatchedJournalStorage(BatchedJournalFileBackend(str(path)))

"""Optuna's journal storage written a block at a time, whatever holds the journal.

``BatchedJournalStorage.batch`` keeps the operations of one ask (or one tell) of a whole batch of
trials in memory and appends them at once when the block ends: Optuna's journal backends append
(and a file backend ``fsync``s) once per operation, about ten per trial. The backend holds a lock
for the block that every batched writer of the same journal takes, so the blocks of different
processes never interleave, and a killed process's lock is dropped at once (an OS file lock in
``journal_file``, a PostgreSQL session lock in ``journal_postgres``).

Crash safety: an operation is durable once its block ends. A process killed inside a block loses
that block's operations, nothing else: killed while asking, the journal holds none of the batch's
trials and the resumed study asks new ones; killed while telling, the batch's trials stay RUNNING
and the resumed study fails them and runs replacements (``StudyConfig.fail_stale_running``, or
the heartbeats of ``journal_postgres``).
"""

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend


class ConcurrentJournalWriteError(RuntimeError):
    """A writer without the batch lock appended to the journal inside a batch."""


class BatchingJournalBackend(BaseJournalBackend):
    """A journal backend whose appends inside a block wait for the block's end.

    Inside a block no other batched writer can append (``batch_lock``), so the journal is read
    once at the start and the block's own logs are served from memory.
    """

    @property
    @abstractmethod
    def in_batch(self) -> bool:
        """True between ``begin`` and ``commit``."""

    @abstractmethod
    def batch_lock(self) -> AbstractContextManager[None]:
        """The lock every batched writer of this journal holds while it writes a block."""

    @abstractmethod
    def begin(self, logs_stored: int) -> None:
        """Start buffering; the caller holds the batch lock and has read ``logs_stored`` logs."""

    @abstractmethod
    def commit(self) -> None:
        """Append the block's logs at once. Raises :class:`ConcurrentJournalWriteError`,
        writing nothing, when the journal grew since the block began."""


class BatchedJournalStorage(JournalStorage):
    """A journal storage whose ``batch()`` writes a whole batch of trial operations at once
    (``ffe_dagster.core.study.optimize.run_study`` asks and tells each batch inside one)."""

    def __init__(self, backend: BatchingJournalBackend) -> None:
        self._batching = backend
        self.broken = False
        super().__init__(backend)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Buffer this storage's writes until the block ends, holding the batch lock meanwhile.

        The logs of the block are written even when it raises: the in-memory study already
        holds them, and a study whose memory and journal disagreed would hand out wrong ids.
        """
        if self._batching.in_batch:
            yield  # nested: the outer block writes
            return
        with self._batching.batch_lock():
            with self._thread_lock:
                self._sync_with_backend()  # what other processes wrote before the lock
                self._batching.begin(self._replay_result.log_number_read)
            try:
                yield
            finally:
                try:
                    self._batching.commit()
                except BaseException:
                    # Whatever stopped the write (another writer, a lost database), its memory
                    # is ahead of the journal now: it is never used again.
                    self.broken = True
                    raise

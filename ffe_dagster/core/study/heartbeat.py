"""Heartbeats for a whole batch of Optuna trials, so the trials of a killed worker are retried.

Optuna records heartbeats only inside ``Study.optimize``, for one trial at a time. ``run_study``
asks a batch of trials and evaluates it in one call, so :class:`BatchHeartbeat` keeps every trial
of the current batch alive from a background thread. A worker killed by SIGKILL stops beating;
once its trials' last heartbeat is older than the storage's grace period, the next worker that calls
:func:`fail_stale_trials` fails them, and the storage's ``RetryHeartbeatStaleTrialCallback``
enqueues each again (WAITING, same parameters) for the next ``study.ask``.
"""

import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

import optuna
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning, StorageInternalError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

_log = logging.getLogger(__name__)

# ``Study.ask`` warns on every call when the storage has heartbeats, because Optuna only beats
# inside ``Study.optimize``; BatchHeartbeat does that job for the batched ask/tell loop.
_ASK_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


def heartbeat_storage(storage: str | BaseStorage) -> BaseHeartbeat | None:
    """``storage`` when it records trial heartbeats (a PostgreSQL journal or an ``RDBStorage``
    opened with a heartbeat interval), else None (a URL string, a journal file, an in-memory
    storage)."""
    if (
        isinstance(storage, BaseStorage)
        and isinstance(storage, BaseHeartbeat)
        and is_heartbeat_enabled(storage)
    ):
        return storage
    return None


@contextmanager
def quiet_heartbeat_warnings() -> Iterator[None]:
    """Silence Optuna's warnings about using heartbeats outside ``Study.optimize`` and about the
    heartbeat API being experimental: this module is the deliberate, tested use of both."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_ASK_WARNING, category=UserWarning)
        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        yield


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's RUNNING trials whose heartbeat is older than the grace period (their worker
    died) and run the storage's stale-trial callback on each, which re-enqueues them for retry.

    Safe with several workers: a trial is failed, and so retried, by one worker only.
    """
    with quiet_heartbeat_warnings():
        optuna.storages.fail_stale_trials(study)


class BatchHeartbeat:
    """Records a heartbeat for every trial of a batch, every heartbeat interval, from entering the
    ``with`` block until leaving it.

    The first heartbeat is written before ``__enter__`` returns, in the caller's thread, so a batch
    is never evaluated without one and a database that is already gone fails the caller at once.
    Later heartbeats come from a daemon thread; the block's exit stops and joins it.
    """

    def __init__(self, storage: BaseHeartbeat, trial_ids: Sequence[int]) -> None:
        interval = storage.get_heartbeat_interval()
        if interval is None:
            raise ValueError("the storage has no heartbeat interval (heartbeats are disabled)")
        self._storage = storage
        self._trial_ids = tuple(trial_ids)
        self._interval = float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="optuna-batch-heartbeat", daemon=True
        )
        self.beats = 0

    def _beat(self) -> None:
        for trial_id in self._trial_ids:
            self._storage.record_heartbeat(trial_id)
        self.beats += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except (StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
                # A database blip. The main thread meets the same error on its next storage call
                # and raises it; this thread keeps trying, because giving up would let a live
                # batch go stale and be evaluated a second time by another worker.
                _log.warning("heartbeat of trials %s failed: %s", self._trial_ids, exc)

    @property
    def running(self) -> bool:
        """True while the background thread is alive."""
        return self._thread.is_alive()

    def __enter__(self) -> "BatchHeartbeat":
        self._beat()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

"""A helper process that does a Dagster run's MLflow logging while the run goes on.

Between one level's study and the next, the run otherwise waits for MLflow: opening the tracking
store (about 1.4 s for a new one, its schema migrations included) and each level's run (plots as
PNG and HTML, tables, step metrics; about 1 s). The study itself uses one core, so a second
process does that work on the other one (README "Timings"):

- a level about to run its study calls ``MlflowTrackingResource.start_worker`` (``python -m
  ffe_dagster.resources.tracking_worker``, once per run); it opens the store and the
  experiment at once;
- every MLflow call of the resource then runs in the worker, in the order it was made, and
  waits for its answer, except the second half of ``log_study(wait=False)``: the run is created
  (its id returned to the level) and the rest is logged while the next level's study runs;
- ``wait`` returns when everything submitted is done and raises the first failure (the
  exception the worker raised, with its traceback as a note); the promotion asset calls it
  before it promotes anything or reports the cycle, and ``teardown_after_execution`` before
  the worker is closed, so no logging is lost or fails unseen.

Requests and answers are pickled frames (8-byte length, then the pickle) over the worker's
stdin and stdout. The resource's settings are the first frame, so a password in the tracking URI
never shows in the process list. The worker ignores Ctrl-C (the parent, which gets it too,
decides) and ends when its input closes, after the request at hand.
"""

import functools
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import IO, Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

_LENGTH = struct.Struct("<Q")
# The calls a worker answers: the resource's MLflow methods, nothing else.
WORKER_METHODS = frozenset(
    {
        "start_study_run",
        "finish_study_run",
        "log_study",
        "log_cycle_report",
        "register_promotion",
        "set_current",
        "clear_current",
        "current_model_version",
        "promoted_params",
        "cycle_run_id",
        "run_statuses",
    }
)


class TrackingWorkerError(RuntimeError):
    """The tracking worker could not be started, or exited before answering."""


def write_frame(stream: IO[bytes], payload: object) -> None:
    """One pickled frame: its length, then the pickle."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's object, or None at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


@dataclass(frozen=True, slots=True)
class Request:
    """One call of a resource method in the worker."""

    seq: int
    method: str
    args: Sequence[Any]
    kwargs: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """The worker's answer to request ``seq`` (0: the store is open): the value, or the
    exception raised and its traceback as text."""

    seq: int
    value: Any = None
    error: BaseException | None = None
    trace: str = ""


def _answer_error(seq: int, exc: Exception) -> Answer:
    trace = traceback.format_exc()
    try:
        pickle.dumps(exc)
    except Exception:  # an exception that cannot cross processes goes as its text
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    return Answer(seq, error=exc, trace=trace)


class TrackingWorker:
    """The parent's side: starts the worker, sends calls, resolves their futures."""

    def __init__(self, settings: Mapping[str, Any], *, log_level: int = logging.WARNING) -> None:
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "ffe_dagster.resources.tracking_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        except OSError as exc:
            raise TrackingWorkerError(f"could not start the MLflow tracking worker: {exc}") from exc
        assert self._process.stdin is not None and self._process.stdout is not None
        self._input = self._process.stdin
        self._lock = threading.Lock()
        self._opened: Future[None] = Future()  # answered first, once the store is open
        self._futures: dict[int, Future[Any]] = {0: self._opened}
        self._pending: list[tuple[str, Future[Any]]] = []
        self._seq = 0
        self._ended = False
        write_frame(self._input, {"resource": dict(settings), "mlflow_log_level": log_level})
        self._reader = threading.Thread(
            target=self._read, args=(self._process.stdout,), name="tracking-worker", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._process.pid

    def _read(self, stream: IO[bytes]) -> None:
        while (answer := read_frame(stream)) is not None:
            with self._lock:
                future = self._futures.pop(answer.seq)
            if answer.error is None:
                future.set_result(answer.value)
            else:
                error = answer.error
                error.add_note(
                    f"raised in the MLflow tracking worker (pid {self.pid}):\n{answer.trace}"
                )
                future.set_exception(error)
        code = self._process.wait()
        with self._lock:
            self._ended = True
            orphans = list(self._futures.values())
            self._futures.clear()
        for future in orphans:
            future.set_exception(
                TrackingWorkerError(
                    f"the MLflow tracking worker (pid {self.pid}) exited with code {code} "
                    "before answering; its error output is above"
                )
            )

    def submit(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Future[Any]:
        """Send one call; its future resolves when the worker answered."""
        if method not in WORKER_METHODS:
            raise ValueError(f"{method} is not a call of the tracking worker")
        with self._lock:
            if self._ended:
                raise TrackingWorkerError(
                    f"the MLflow tracking worker (pid {self.pid}) is not running "
                    f"(exit code {self._process.returncode})"
                )
            self._seq += 1
            future: Future[Any] = Future()
            self._futures[self._seq] = future
            try:
                write_frame(self._input, Request(self._seq, method, tuple(args), dict(kwargs)))
            except (BrokenPipeError, ValueError) as exc:
                del self._futures[self._seq]
                raise TrackingWorkerError(
                    f"the MLflow tracking worker (pid {self.pid}) is not running: {exc}"
                ) from exc
        return future

    def call(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Run one call in the worker and return its value (or raise its exception)."""
        return self.submit(method, args, kwargs).result()

    def defer(self, what: str, method: str, args: Sequence[Any]) -> None:
        """Send one call whose outcome ``wait`` reports; ``what`` names it in a failure."""
        self._pending.append((what, self.submit(method, args, {})))

    def ready(self) -> None:
        """Wait until the worker opened the tracking store (raise why it could not)."""
        self._opened.result()

    def wait(self) -> None:
        """Wait for every deferred call; raise the first failure, naming every failed one."""
        pending, self._pending = self._pending, []
        failed: list[tuple[str, BaseException]] = []
        for what, future in pending:
            error = future.exception()
            if error is not None:
                failed.append((what, error))
        if failed:
            first = failed[0][1]
            first.add_note("MLflow logging failed for: " + "; ".join(w for w, _ in failed))
            raise first

    def close(self) -> None:
        """``wait``, then end the worker: its input closes and it exits on its own (every
        call was answered; its interpreter's shutdown, about a second, is not waited for)."""
        try:
            self.wait()
        finally:
            self._input.close()

    def join(self, timeout: float | None = None) -> int | None:
        """Wait until the worker exited (after ``close``); its exit code, None if still
        running after ``timeout`` seconds."""
        self._reader.join(timeout)
        return self._process.poll()


class HasWorker(Protocol):
    """What ``in_worker`` routes through: an object that may have a running worker."""

    def worker(self) -> TrackingWorker | None: ...


_S = TypeVar("_S", bound=HasWorker)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def in_worker(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Run ``method`` in its object's tracking worker when one is running (waiting for the
    answer), else in this process; the worker calls the same method by name."""

    @functools.wraps(method)
    def call(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        worker = self.worker()
        if worker is None:
            return method(self, *args, **kwargs)
        return cast(_R, worker.call(method.__name__, args, kwargs))

    return call


def serve() -> None:
    """The worker's loop: settings, open the store, then answer requests until input ends."""
    from ffe_dagster.resources.tracking import MlflowTrackingResource

    # Ctrl-C reaches the whole process group: the parent decides, and closes our input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Library output must not mix into the answers: they go to a copy of stdout, and what is
    # printed goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    settings = read_frame(requests)
    if settings is None:
        return
    # As verbose as MLflow is in the parent (its INFO lines are off unless ``-v``).
    logging.getLogger("mlflow").setLevel(settings["mlflow_log_level"])
    resource = MlflowTrackingResource(**{**settings["resource"], "use_worker": False})
    try:
        resource.experiment_id(resource.client())
        write_frame(answers, Answer(0))
    except Exception as exc:
        write_frame(answers, _answer_error(0, exc))
    while (request := read_frame(requests)) is not None:
        try:
            value = getattr(resource, request.method)(*request.args, **request.kwargs)
            answer = Answer(request.seq, value)
        except Exception as exc:
            answer = _answer_error(request.seq, exc)
        write_frame(answers, answer)


if __name__ == "__main__":
    # From the package, not this ``__main__`` copy: answers must unpickle in the parent.
    from ffe_dagster.resources.tracking_worker import serve as package_serve

    package_serve()

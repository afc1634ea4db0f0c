"""A private Redis server on this machine: the Celery broker (and result store) of the study
workers' cluster, started in a folder on a free port of 127.0.0.1 and stopped at the end.

Redis rather than RabbitMQ: one small binary (Debian's ``redis-server``) that starts in well under
a second as any user, root included, with no Erlang VM, node name, cookie or epmd to set up, and
it serves as Celery's broker and result backend at once. Its cost, said in deploy/WORKERS.md:
a message a dead *machine* had taken comes back only after the transport's visibility timeout
(RabbitMQ would hand it back as soon as the connection drops).

The server keeps an append-only file (``appendonly yes``), so a restart finds the queued tasks and
stored results again. It asks for a random password: clients use the URL from :meth:`url`, which
holds it, and never log it. ``make run-cluster`` and the tests in ``tests/celery`` use this module;
production points ``DAGSTER_CELERY_BROKER_URL`` at a managed broker instead.
"""

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = (
    "redis-server was not found. The Celery cluster (make run-cluster, tests/celery) needs a real "
    "broker: install Debian's `redis-server` package "
    "(`apt-get install -y --no-install-recommends redis-server`; scripts/ensure-redis.sh does it)."
)
START_TIMEOUT_S = 30.0


class BrokerUnavailable(RuntimeError):
    """No ``redis-server`` binary on this machine."""


def find_redis_server() -> Path:
    """The ``redis-server`` binary on ``PATH`` (Debian installs it in /usr/bin)."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if found is None:
        raise BrokerUnavailable(INSTALL_HINT)
    return Path(found)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, password: str) -> bool:
    # The inline RESP protocol is enough to ask "are you up and is this the password?".
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+OK\r\n+PONG\r\n"
    except OSError:
        return False


@dataclass(slots=True)
class RedisServer:
    """A Redis server in ``root``: where it listens, its password, and how to stop and start it."""

    port: int
    password: str = field(repr=False)
    root: Path
    binary: Path = field(repr=False)
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, database: int = 0) -> str:
        """``redis://:PASSWORD@host:port/database`` (the password is in it: keep it out of logs)."""
        return f"redis://:{self.password}@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it answers ``PING`` with the password."""
        if self._process is not None and self._process.poll() is None:
            return
        config = self.root / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"dir {self.root}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    f"logfile {self.root / 'redis.log'}",
                    f"requirepass {self.password}",
                    "",
                ]
            )
        )
        config.chmod(0o600)
        self._process = subprocess.Popen(
            [str(self.binary), str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the caller must not kill it before stop()
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ping(self.port, self.password):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.root / "redis.log"
                self.stop()
                raise RuntimeError(
                    f"redis-server did not start on port {self.port}:\n"
                    + (log.read_text()[-2000:] if log.is_file() else "")
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM: Redis flushes its append-only file first)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server, stay down ``down_s`` seconds, start it again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()


@contextmanager
def running_redis(root: Path | None = None) -> Iterator[RedisServer]:
    """A running private Redis for the duration of the ``with`` block.

    ``root=None`` uses a temporary folder, removed afterwards; a given ``root`` is kept (its
    append-only file too), so a later call finds what the server held.
    """
    binary = find_redis_server()
    temporary = root is None
    folder = Path(tempfile.mkdtemp(prefix="ffe-redis-")) if root is None else root.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(_free_port(), secrets.token_hex(16), folder, binary)
    try:
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)

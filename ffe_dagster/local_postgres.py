"""A private PostgreSQL server on this machine: ``initdb`` into a folder, ``pg_ctl start`` on a free
port of 127.0.0.1, databases on request, ``pg_ctl stop`` at the end.

The tests use a throw-away one per session; ``make run-postgres`` and ``make bench-postgres`` keep
theirs under ``var/postgres`` so a second run finds its studies, registry and Dagster runs again.
Production points at a managed server instead (deploy/README.md); only this local tooling (the
tests, ``make run-postgres``, ``make bench-postgres``) imports this module.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` OS user (created by Debian's ``postgresql`` package) and owns the temporary folder.
The superuser ``ffe`` logs in over TCP with a SCRAM password, as a production client would; the
unix socket lives in the temporary folder so the server never touches ``/var/run/postgresql``.
"""

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import psycopg2.errors
from sqlalchemy.engine import URL

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. The production-mode tests need "
    "a real PostgreSQL server: install Debian's `postgresql` package "
    "(`apt-get install -y --no-install-recommends postgresql`; .ci/run does it in CI)."
)
SUPERUSER = "ffe"
OS_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or no ``postgres`` user to run them)."""


def find_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, then Debian's
    ``/usr/lib/postgresql/<version>/bin`` (newest first), then ``PATH``."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        # pg_config may come from libpq-dev alone (no server): only trust it if initdb is there.
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else -1,
        reverse=True,
    )
    candidates.extend(Path(p) for p in versions)
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresUnavailable(INSTALL_HINT)


def _free_port() -> int:
    # The OS picks a free port; the tiny window before the server binds it is acceptable in tests.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(cmd: Sequence[str]) -> list[str]:
    # The postgres binary exits at once when started by root.
    if os.geteuid() != 0:
        return list(cmd)
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", OS_USER, "--", *cmd]
    return ["su", OS_USER, "-s", "/bin/sh", "-c", " ".join(_quote(c) for c in cmd)]


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def _run(cmd: Sequence[str], what: str, log: Path | None = None) -> None:
    out = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        # pg_ctl only says "see the log file": put the server's own words in the error.
        server_log = log.read_text() if log is not None and log.is_file() else ""
        raise RuntimeError(
            f"{what} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{server_log}"
        )


@dataclass(slots=True)
class PostgresServer:
    """A server in ``root``: where it listens, how to log in, and how to stop and start it."""

    host: str
    port: int
    user: str
    password: str
    root: Path
    bindir: Path = field(repr=False)

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder (``initdb -D``)."""
        return self.root / "data"

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of ``database`` on this server (password included)."""
        return URL.create(
            driver,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def create_database(self, name: str, exist_ok: bool = False) -> str:
        """Create the empty database ``name`` and return its SQLAlchemy URL."""
        con = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
        )
        try:
            # CREATE DATABASE cannot run inside a transaction block.
            con.autocommit = True
            with con.cursor() as cur:
                try:
                    cur.execute(f'CREATE DATABASE "{name}"')
                except psycopg2.errors.DuplicateDatabase:
                    if not exist_ok:
                        raise
        finally:
            con.close()
        return self.url(name)

    def start(self) -> None:
        """Start the server (``pg_ctl start``, waiting until it accepts connections)."""
        sockets = self.root / "sockets"
        options = (
            f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = self.root / "server.log"
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir)]
        status = subprocess.run(_as_server_user([*pg_ctl, "status"]), capture_output=True)
        if status.returncode == 0:
            # Left running by a process that was killed: stop it so it listens on our port.
            self.stop()
        _run(
            [*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", "30", "start"],
            "pg_ctl start",
            log=log,
        )

    def stop(self) -> None:
        """Stop the server: ``fast`` disconnects clients (pooled connections) first."""
        _run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            "pg_ctl stop",
        )


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        try:
            shutil.chown(path, user=OS_USER, group=None)
        except LookupError as exc:
            raise PostgresUnavailable(
                f"no `{OS_USER}` OS user to run the server as root. {INSTALL_HINT}"
            ) from exc


def _init_cluster(root: Path, bindir: Path) -> PostgresServer:
    """``initdb`` a new cluster in ``root`` with a random password and a free port."""
    _chown(root)
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    _chown(pwfile)
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a private cluster: durability does not matter, speed does
        ],
        "initdb",
    )
    pwfile.unlink()
    sockets = root / "sockets"
    sockets.mkdir()
    _chown(sockets)
    server = PostgresServer("127.0.0.1", _free_port(), SUPERUSER, password, root, bindir)
    # Kept (0600) so a persistent cluster can be started again with the same login.
    login = root / "login.json"
    login.write_text(json.dumps({"port": server.port, "password": password}))
    login.chmod(0o600)
    return server


@contextmanager
def running_postgres(root: Path | None = None) -> Iterator[PostgresServer]:
    """A running private server for the duration of the ``with`` block.

    ``root=None`` makes a throw-away cluster in a temporary folder, removed afterwards. A ``root``
    folder is kept: the first call initialises it, later calls start the same cluster again.
    """
    bindir = find_bindir()
    if os.geteuid() == 0 and shutil.which("runuser") is None and shutil.which("su") is None:
        raise PostgresUnavailable("running as root needs runuser or su to start PostgreSQL")
    # Not pytest's tmp_path: its parents are 0700 root folders the postgres user cannot enter.
    temporary = root is None
    folder = Path(tempfile.mkdtemp(prefix="ffe-pg-")) if root is None else root.resolve()
    try:
        login = folder / "login.json"
        if login.is_file():
            saved = json.loads(login.read_text())
            port = int(saved["port"])
            if _port_taken(port):
                port = _free_port()
                login.write_text(json.dumps({"port": port, "password": saved["password"]}))
            server = PostgresServer("127.0.0.1", port, SUPERUSER, saved["password"], folder, bindir)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            server = _init_cluster(folder, bindir)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        if temporary:
            shutil.rmtree(folder)


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0

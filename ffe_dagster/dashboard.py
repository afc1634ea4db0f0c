"""``make dashboard``: optuna-dashboard over the project's Optuna studies.

It serves the storage the level assets and ``study_workers_job`` write to, from the same setting:
``FFE_STUDIES_URL`` (the journal file under ``var/optuna`` by default, PostgreSQL in production
mode). The dashboard only reads studies, so the SQL storage is opened without heartbeats. The
URL is printed with its password hidden. A journal in PostgreSQL keeps each level study (with its
walk-forward studies) in a stream of its own, and the dashboard serves one stream: ``--stream``,
or the most recently written one; the others are listed.
"""

import argparse
import sys
from collections.abc import Sequence

import optuna_dashboard
from sqlalchemy.engine import make_url

from ffe_dagster.config.settings import Settings
from ffe_dagster.resources.journal_postgres import (
    database_url,
    is_postgres_journal_url,
    journal_streams,
)
from ffe_dagster.resources.optuna_storage import CONNECT_TIMEOUT_S, JOURNAL_SCHEME, open_storage


def shown_url(url: str) -> str:
    """``url`` as it may be printed: a journal path as is, an SQL URL without its password."""
    if url.startswith(JOURNAL_SCHEME):
        return url
    return make_url(database_url(url)).render_as_string(hide_password=True)


def _stream(url: str, chosen: str | None) -> str | None:
    # Only a journal in PostgreSQL has streams; the file and RDB storages hold every study.
    if not is_postgres_journal_url(url):
        return None
    streams = journal_streams(url, CONNECT_TIMEOUT_S)
    if chosen is not None and chosen not in streams:
        raise SystemExit(f"no stream {chosen!r} in {shown_url(url)}; streams: {streams}")
    if not streams:
        raise SystemExit(f"no Optuna study in {shown_url(url)} yet: run the curriculum first")
    print(f"streams, most recent first (--stream NAME): {', '.join(streams)}", flush=True)
    return chosen or streams[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``make dashboard``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="ffe_dagster.dashboard")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--production",
        action="store_true",
        help="start make run-postgres's private PostgreSQL server and serve its studies",
    )
    parser.add_argument(
        "--stream",
        help="on a journal in PostgreSQL: the level study to serve (default: the newest)",
    )
    args = parser.parse_args(argv)
    if args.production:
        # Local tooling only: the server of ``make run-postgres``, with its environment.
        from ffe_dagster.local_production import PROJECT_DIR, run_in_production_mode

        command = [sys.executable, "-m", "ffe_dagster.dashboard", "--host", args.host]
        if args.stream:
            command += ["--stream", args.stream]
        return run_in_production_mode(
            PROJECT_DIR / "var" / "production", [*command, "--port", str(args.port)]
        )
    settings = Settings.from_env()
    stream = _stream(settings.studies_url, args.stream)
    storage = open_storage(settings.studies_url, stream=stream, heartbeat_interval=None)
    print(
        f"optuna-dashboard over {shown_url(settings.studies_url)}"
        f"{f' (stream {stream})' if stream else ''} on "
        f"http://{args.host}:{args.port}",
        flush=True,
    )
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

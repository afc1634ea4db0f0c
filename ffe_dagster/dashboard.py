"""``make dashboard``: optuna-dashboard over the project's Optuna studies.

It serves the storage the level assets and ``study_workers_job`` write to, from the same setting:
``FFE_STUDIES_URL`` (the journal file under ``var/optuna`` by default, PostgreSQL in production
mode). The dashboard only reads studies, so the SQL storage is opened without heartbeats. The
URL is printed with its password hidden.
"""

import argparse
import sys
from collections.abc import Sequence

import optuna_dashboard
from sqlalchemy.engine import make_url

from ffe_dagster.config.settings import Settings
from ffe_dagster.resources.optuna_storage import JOURNAL_SCHEME, open_storage


def shown_url(url: str) -> str:
    """``url`` as it may be printed: a journal path as is, an SQL URL without its password."""
    if url.startswith(JOURNAL_SCHEME):
        return url
    return make_url(url).render_as_string(hide_password=True)


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
    args = parser.parse_args(argv)
    if args.production:
        # Local tooling only: the server of ``make run-postgres``, with its environment.
        from ffe_dagster.local_production import PROJECT_DIR, run_in_production_mode

        command = [sys.executable, "-m", "ffe_dagster.dashboard", "--host", args.host]
        return run_in_production_mode(
            PROJECT_DIR / "var" / "production", [*command, "--port", str(args.port)]
        )
    settings = Settings.from_env()
    storage = open_storage(settings.studies_url, heartbeat_interval=None)
    print(
        f"optuna-dashboard over {shown_url(settings.studies_url)} on "
        f"http://{args.host}:{args.port}",
        flush=True,
    )
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

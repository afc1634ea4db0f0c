"""Checks of the values read from the environment: database and tracking URLs, the webhook
URL and the notification settings, and the cycle's cron string.

Each check records a problem naming the variable and what was expected. A URL is shown with its
password hidden (SQLAlchemy's rendering) or reduced to ``scheme://host``: these values often
carry credentials, and a message ends up in logs and in the Dagster UI.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url

from ffe_dagster.config.errors import Problems

JOURNAL_PREFIX = "journal:///"
# Optuna's journal in a PostgreSQL database (resources/journal_postgres.py).
DATABASE_JOURNAL_PREFIX = "journal+"
SQL_FORMS = "sqlite:///path/file.db or postgresql+psycopg2://user:password@host:port/database"
MLFLOW_FORMS = (
    "sqlite:///path/mlflow.db, postgresql+psycopg2://user:password@host/database, "
    "file:/path or http(s)://host[:port]"
)


def _host_only(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no user, password, path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unparseable URL"
    return f"{parts.scheme}://{host}{port}" if parts.scheme else "a URL without a scheme"


def _scheme(value: str) -> str:
    """What the value declares itself as, without any of its content."""
    head, sep, _ = value.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head):
        return f"{head}://..."
    return "a value without a scheme"


def _parse_sql(var: str, url: str, problems: Problems) -> URL | None:
    try:
        return make_url(url)
    except Exception:  # ArgumentError, ValueError: unparseable, never echo it (may hold a password)
        problems.add(f"{var} must be an SQLAlchemy URL ({SQL_FORMS}); got {_scheme(url)}")
        return None


def check_sql_url(var: str, url: str, problems: Problems) -> None:
    """An SQLAlchemy URL of a backend this project can reach: SQLite, or PostgreSQL through
    psycopg2 (the only PostgreSQL driver installed)."""
    if url.startswith("journal:"):
        problems.add(f"{var} must be an SQLAlchemy URL ({SQL_FORMS}), not a journal file")
        return
    parsed = _parse_sql(var, url, problems)
    if parsed is None:
        return
    shown = parsed.render_as_string(hide_password=True)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if parsed.drivername == "postgresql" or (backend == "postgresql" and driver != "psycopg2"):
        problems.add(
            f"{var} must name the psycopg2 driver, the only PostgreSQL driver installed: write "
            f"postgresql+psycopg2://... instead of {parsed.drivername}://..., got {shown}"
        )
    elif backend == "postgresql" and not parsed.database:
        problems.add(
            f"{var} must name a database (postgresql+psycopg2://.../database), got {shown}"
        )
    elif backend == "sqlite" and not parsed.database:
        problems.add(f"{var} must name a file (sqlite:///path/file.db), got {shown}")
    elif backend not in ("sqlite", "postgresql"):
        problems.add(f"{var} must be {SQL_FORMS}; got the unsupported backend {shown}")


def check_studies_url(var: str, url: str, problems: Problems) -> None:
    """Optuna's storage: ``journal:///absolute/path``, ``journal+postgresql+psycopg2://…`` (a
    journal in PostgreSQL) or an SQLAlchemy URL."""
    if url.startswith(DATABASE_JOURNAL_PREFIX):
        sql = url.removeprefix(DATABASE_JOURNAL_PREFIX)
        if not sql.startswith("postgresql"):
            problems.add(
                f"{var}: a journal in a database must be journal+postgresql+psycopg2://..., "
                f"got {_scheme(url)}"
            )
            return
        check_sql_url(var, sql, problems)
        return
    if url.startswith("journal:"):
        if not url.startswith(JOURNAL_PREFIX) or not url.removeprefix(JOURNAL_PREFIX).strip("/"):
            problems.add(f"{var} must be journal:///absolute/path/file.journal, got {url!r}")
        return
    if "://" not in url:
        problems.add(
            f"{var} must be journal:///absolute/path or an SQLAlchemy URL ({SQL_FORMS}); "
            f"got {_scheme(url)}"
        )
        return
    check_sql_url(var, url, problems)


def check_mlflow_uri(var: str, uri: str, problems: Problems) -> None:
    """MLflow's tracking store: an SQL database, a file store or a tracking server."""
    if uri.startswith(("sqlite:", "postgresql")):
        check_sql_url(var, uri, problems)
    elif uri.startswith("file:"):
        if not uri.removeprefix("file:").lstrip("/"):
            problems.add(f"{var} must name a folder (file:/path), got {uri!r}")
    elif uri.startswith(("http://", "https://")):
        if not urlsplit(uri).hostname:
            problems.add(f"{var} must name a host (http(s)://host[:port]), got {_host_only(uri)}")
    else:
        problems.add(f"{var} must be one of {MLFLOW_FORMS}; got {_scheme(uri)}")


def check_webhook_url(var: str, url: str, problems: Problems) -> None:
    """An http(s) URL with a host; only ``scheme://host`` is ever shown (the path often holds
    the token)."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        ok = False
    if not ok:
        problems.add(f"{var} must be an http:// or https:// URL with a host, got {_host_only(url)}")


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Whether notifications are required, when their delay pauses promotion, and the base URLs
    of the links they carry."""

    required: bool
    stall_minutes: float
    dagster_ui_url: str
    mlflow_ui_url: str


def _flag(var: str, value: str, problems: Problems) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() not in _FALSE:
        problems.add(f"{var} must be one of 1, true, yes, on, 0, false, no, off; got {value!r}")
    return False


def check_flag(var: str, env: Mapping[str, str], default: bool, problems: Problems) -> bool:
    """The on/off variable ``var`` of ``env`` (``default`` when unset); anything but 1, true,
    yes, on, 0, false, no, off is a problem."""
    return _flag(var, env[var], problems) if var in env else default


def _ui_url(env: Mapping[str, str], var: str, default: str, problems: Problems) -> str:
    url = env.get(var, default)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.add(f"{var} must be an http(s)://host[:port] base URL, got {_host_only(url)}")
    return url


def check_notify(env: Mapping[str, str], webhook_var: str, problems: Problems) -> NotifySettings:
    """``FFE_NOTIFY_REQUIRED`` (off by default): when on, ``webhook_var`` must hold a valid
    URL (checked by ``check_webhook_url``); ``FFE_NOTIFY_STALL_MINUTES`` (60): how long a
    notification may wait for delivery before promotion to LIMITED and FULL pauses;
    ``FFE_DAGSTER_UI_URL`` / ``FFE_MLFLOW_UI_URL``: the bases of the links."""
    required = _flag("FFE_NOTIFY_REQUIRED", env.get("FFE_NOTIFY_REQUIRED", ""), problems)
    if required and not env.get(webhook_var, "").strip():
        problems.add(
            f"FFE_NOTIFY_REQUIRED is on, so {webhook_var} must be set to the http(s) URL that "
            "receives notifications (a Slack or Teams incoming webhook, or your own endpoint); "
            f"set {webhook_var}, or set FFE_NOTIFY_REQUIRED=0 to run without notifications"
        )
    raw = env.get("FFE_NOTIFY_STALL_MINUTES", "60")
    try:
        stall = float(raw)
    except ValueError:
        problems.add(f"FFE_NOTIFY_STALL_MINUTES must be a number of minutes, got {raw!r}")
        stall = 60.0
    else:
        if not stall > 0:
            problems.add(f"FFE_NOTIFY_STALL_MINUTES must be > 0, got {raw!r}")
    return NotifySettings(
        required=required,
        stall_minutes=stall,
        dagster_ui_url=_ui_url(env, "FFE_DAGSTER_UI_URL", "http://127.0.0.1:3000", problems),
        mlflow_ui_url=_ui_url(env, "FFE_MLFLOW_UI_URL", "http://127.0.0.1:5000", problems),
    )


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# name, lowest, highest, names (numbered from ``lowest``)
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _cron_value(token: str, low: int, high: int, names: tuple[str, ...]) -> int | None:
    if token.lower() in names:
        return names.index(token.lower()) + low
    return int(token) if token.isdigit() and low <= int(token) <= high else None


def _cron_item(item: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    base, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) >= 1):
        return False
    if base == "*":
        return True
    first, dash, last = base.partition("-")
    a = _cron_value(first, low, high, names)
    b = _cron_value(last, low, high, names) if dash else a
    return a is not None and b is not None  # a reversed range wraps around, as in croniter


def _cron_field(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    if field in ("day of month", "day of week") and text == "?":
        return True
    if field == "day of month" and text == "L":
        return True
    if field == "day of week" and re.fullmatch(r"[0-7]#[1-5]", text):
        return True
    return all(_cron_item(item, low, high, names) for item in text.split(","))


def is_valid_cron(cron: str) -> bool:
    """A standard 5-field cron string (or a macro such as ``@daily``) that fires at least once a
    year; ``*/6``, ranges, lists and month/day names are accepted."""
    if cron.strip() in CRON_MACROS:
        return True
    fields = cron.split()
    if len(fields) != len(_CRON_FIELDS):
        return False
    if not all(
        _cron_field(text, field, low, high, names)
        for text, (field, low, high, names) in zip(fields, _CRON_FIELDS, strict=True)
    ):
        return False
    day, month = fields[2], fields[3]
    return not (month in ("2", "feb", "FEB", "Feb") and day in ("30", "31"))


def check_cron(var: str, cron: str, problems: Problems) -> None:
    """A cron string Dagster's schedules accept."""
    if not is_valid_cron(cron):
        problems.add(
            f"{var} must be a 5-field cron string (minute hour day-of-month month day-of-week, "
            f"e.g. '0 */6 * * *') or one of {list(CRON_MACROS)}, got {cron!r}"
        )

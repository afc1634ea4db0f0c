"""A real PostgreSQL server for the whole session, and a fresh database for each test.

No skip when PostgreSQL is missing: production mode is part of the product, so a machine without
the server fails with the command that installs it (CI installs it in .ci/run).
"""

import uuid
from collections.abc import Iterator

import pytest

from ffe_dagster.config.environment import DATABASE_JOURNAL_PREFIX
from ffe_dagster.local_postgres import PostgresServer, PostgresUnavailable, running_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped (and its folder removed) at the end."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        # Raised before the server starts, never by a test: fail with the install hint.
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL (postgresql+psycopg2://...) of an empty database private to the test."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["journal", "rdb"])
def studies_url(request: pytest.FixtureRequest, postgres_url: str) -> str:
    """An Optuna storage URL on a private database: production's journal in PostgreSQL
    (``journal+postgresql+psycopg2://``, a stream per study), then Optuna's RDB storage."""
    return DATABASE_JOURNAL_PREFIX + postgres_url if request.param == "journal" else postgres_url

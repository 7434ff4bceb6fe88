"""Fixtures shared by every suite: the same tests run on SQLite and on PostgreSQL.

PostgreSQL is the real server named by SALESPLAN_TEST_POSTGRES_URL (default: the machine's
127.0.0.1:5432/test). When CI=true and it is unreachable the run fails; it never skips there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from domain.application import SalesPlanning
from domain.persistence import Database, close_database, open_database

POSTGRES_URL = os.environ.get(
    "SALESPLAN_TEST_POSTGRES_URL", "postgresql+psycopg2://root@127.0.0.1:5432/test"
)


def _postgres_reachable() -> str | None:
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return None
    except Exception as e:
        return str(e).splitlines()[0]
    finally:
        engine.dispose()


def reset_postgres() -> None:
    """Empty the test database: every PostgreSQL test starts from an empty event store."""
    close_database(POSTGRES_URL)
    engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    problem = _postgres_reachable()
    if problem is None:
        return True
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is unreachable at {POSTGRES_URL} and CI=true: {problem}")
    pytest.skip(f"PostgreSQL unreachable ({problem}); set CI=true to make this fatal")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file or the emptied PostgreSQL test database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'salesplan.db'}"
        yield url
        close_database(url)
    else:
        request.getfixturevalue("postgres_available")
        reset_postgres()
        yield POSTGRES_URL
        close_database(POSTGRES_URL)


@pytest.fixture
def database(database_url: str) -> Database:
    return open_database(database_url)


@pytest.fixture
def app(database: Database) -> SalesPlanning:
    return SalesPlanning(database)

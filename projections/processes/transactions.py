"""Short write transactions for the processes' own tables."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.persistence import IMMEDIATE, Database


@contextmanager
def write_transaction(database: Database, lock: str) -> Iterator[Connection]:
    """A short write transaction; on PostgreSQL one writer per ``lock`` at a time."""
    with database.engine.connect() as conn:
        conn = conn.execution_options(**IMMEDIATE)
        with conn.begin():
            if database.is_postgres:
                key = zlib.crc32(f"salesplan.{lock}".encode()) - 2**31
                conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": key})
            yield conn



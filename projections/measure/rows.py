"""Rows given by the caller, as a relation a statement can join: the cells a question asks about.

They travel as one JSON parameter (PostgreSQL: ``jsonb_to_recordset``; SQLite: ``json_each``), so
the statement's text is the same however many rows there are: SQLAlchemy caches its compilation
and the backend never sees thousands of bind parameters. Values are written the way each backend
stores them (SQLite keeps UUIDs as hex and times as naive UTC text), so they compare like columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = ["Column", "json_rows"]

Kind = Literal["text", "uuid", "time", "day"]
Column = tuple[str, Kind]

_PG_TYPES: dict[Kind, Any] = {"text": sa.Text, "uuid": sa.Uuid, "time": sa.DateTime(timezone=True), "day": sa.Date}


def _value(value: Any, kind: Kind, dialect: str) -> Any:
    if value is None:
        return None
    if kind == "uuid":
        assert isinstance(value, UUID)
        return value.hex if dialect == "sqlite" else str(value)
    if kind == "time":
        assert isinstance(value, datetime) and value.tzinfo is not None
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") if dialect == "sqlite" \
            else utc.isoformat()
    if kind == "day":
        assert isinstance(value, date)
        return value.isoformat()
    return str(value)


def json_rows(name: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]], dialect: str) -> sa.CTE:
    """A CTE ``name`` with ``columns`` holding ``rows``, for ``dialect`` (``postgresql`` or ``sqlite``)."""
    data = [{c: _value(v, kind, dialect) for (c, kind), v in zip(columns, row, strict=True)} for row in rows]
    if dialect == "postgresql":
        source = sa.func.jsonb_to_recordset(sa.bindparam(f"{name}_rows", data, type_=postgresql.JSONB)).table_valued(
            *(sa.column(c, _PG_TYPES[kind]) for c, kind in columns)).render_derived(name=f"{name}_json", with_types=True)
        return sa.select(*(source.c[c] for c, _ in columns)).cte(name)
    each = sa.func.json_each(sa.bindparam(f"{name}_rows", json.dumps(data), type_=sa.Text)).table_valued(
        "value").alias(f"{name}_json")
    return sa.select(*(sa.func.json_extract(each.c.value, f"$.{c}").label(c) for c, _ in columns)).cte(name)

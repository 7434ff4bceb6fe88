"""One cursor scheme for every list the API serves.

A list takes ``limit`` (1 … ``MAX_LIMIT``) and ``cursor`` (the ``next_cursor`` of the page
before) and answers ``next_cursor`` (null on the last page). A cursor is opaque to clients:
base64url JSON holding the list it belongs to, a fingerprint of the filters it was made for,
the sort key of the last row served and — for projection reads — the log position the first
page was read at. Following pages are read at that same position, so a listing never shifts
while it is paged, and rows arriving meanwhile show up in the next listing, not in the middle
of this one. A cursor used on another list or with other filters is refused (422
``cursor.invalid``): it would silently skip or repeat rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, TypeVar
from uuid import UUID

from fastapi import Query, Request
from sqlalchemy.engine import Connection

from api.deps import CutQuery, Services, reading
from api.errors import ApiProblem
from projections.history import Cut

MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
MAX_CURSOR_LENGTH: Final = 2048

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Rows per page, at most {MAX_LIMIT}")]
CursorToken = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_CURSOR_LENGTH, pattern=r"^[A-Za-z0-9_-]+$",
          description="`next_cursor` of the page before, unchanged (the other parameters must stay the same)"),
]

KeyValue = str | int | None
Parser = Callable[[Any], Any]


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after ``key``, read at ``position`` (None: the list is not read at a cut)."""

    key: tuple[Any, ...]
    position: int | None


def _plain(value: Any) -> KeyValue:
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"a cursor key cannot hold {type(value).__name__}")


def fingerprint(listing: str, filters: Mapping[str, Any]) -> str:
    """The list and its filters, hashed: a cursor only continues the listing it was made for."""
    canonical = json.dumps({"list": listing, **{k: _plain_filter(v) for k, v in filters.items()}}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _plain_filter(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain_filter(v) for v in value]
    if isinstance(value, bool):
        return value
    return _plain(value)


def encode(listing: str, filters: Mapping[str, Any], key: Sequence[Any], position: int | None = None) -> str:
    body = {"v": 1, "f": fingerprint(listing, filters), "k": [_plain(k) for k in key], "p": position}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invalid(detail: str) -> ApiProblem:
    return ApiProblem(422, "cursor.invalid", detail, parameter="cursor")


def decode(token: str | None, listing: str, filters: Mapping[str, Any], parsers: Sequence[Parser]) -> Cursor | None:
    """The cursor a client sent back (None: the first page); 422 ``cursor.invalid`` if it is not this list's."""
    if token is None:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid("the cursor is not one this API issued: pass next_cursor unchanged") from None
    if not isinstance(body, dict) or body.get("v") != 1 or not isinstance(body.get("k"), list):
        raise _invalid("the cursor is not one this API issued: pass next_cursor unchanged")
    if body.get("f") != fingerprint(listing, filters):
        raise _invalid("the cursor belongs to another list or to other filters: keep the parameters of the first page")
    raw_key, position = body["k"], body.get("p")
    if len(raw_key) != len(parsers) or not (position is None or (isinstance(position, int) and position >= 0)):
        raise _invalid("the cursor is not one this API issued: pass next_cursor unchanged")
    try:
        key = tuple(None if value is None else parse(value) for parse, value in zip(parsers, raw_key, strict=True))
    except (TypeError, ValueError):
        raise _invalid("the cursor is not one this API issued: pass next_cursor unchanged") from None
    return Cursor(key, position)


@dataclass(frozen=True)
class Page:
    """One page of a listing: the rows to serve and, when more follow, the cursor to the next page."""

    rows: list[Any]
    next_cursor: str | None


def page(found: Sequence[Any], limit: int, listing: str, filters: Mapping[str, Any], key: Callable[[Any], Sequence[Any]],
         position: int | None = None) -> Page:
    """``found`` holds up to ``limit + 1`` rows in list order: the extra one only says another page follows."""
    rows = list(found[:limit])
    more = len(found) > limit and bool(rows)
    return Page(rows, encode(listing, filters, key(rows[-1]), position) if more else None)


def no_after(request: Request) -> None:
    """For lists that paged with ``after`` before: refuse it, rather than serve the first page again and again."""
    if "after" in request.query_params:
        raise ApiProblem(422, "query.after_replaced", "this list pages with cursor: pass the next_cursor of the page "
                                                      "before as cursor", parameter="after")


def pinned_position(cursor: Cursor | None, requested: int | None) -> int | None:
    """The position a following page is read at: the first page's (never later than one asked for)."""
    if cursor is None or cursor.position is None:
        return requested
    return cursor.position if requested is None else min(cursor.position, requested)


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("not a time")
    return datetime.fromisoformat(value)


def parse_date(value: Any) -> date:
    if not isinstance(value, str):
        raise TypeError("not a date")
    return date.fromisoformat(value)


def parse_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def parse_uuid(value: Any) -> UUID:
    if not isinstance(value, str):
        raise TypeError("not an id")
    return UUID(value)


T = TypeVar("T")
Fetch = Callable[[Connection, Cut, tuple[Any, ...] | None], Sequence[T]]


def read_page(services: Services, projections: tuple[str, ...], cut_query: CutQuery, *, listing: str,
              filters: Mapping[str, Any], token: str | None, parsers: Sequence[Parser], limit: int,
              fetch: Fetch[T], key: Callable[[T], Sequence[Any]]) -> tuple[Page, Cut]:
    """One page of a projection read: ``fetch`` answers up to ``limit + 1`` rows after the cursor's key, at the cut.

    The cut's parameters are part of the filters, and a following page is read at the first
    page's position.
    """
    bound = {**filters, "as_of": cut_query.as_of, "known_at": cut_query.known_at,
             "known_at_position": cut_query.known_at_position}
    cursor = decode(token, listing, bound, parsers)
    position = pinned_position(cursor, cut_query.known_at_position)
    query = cut_query if position == cut_query.known_at_position else replace(cut_query, known_at_position=position)
    with reading(services, projections, query) as (conn, cut):
        found = fetch(conn, cut, None if cursor is None else cursor.key)
    return page(found, limit, listing, bound, key, cut.position), cut

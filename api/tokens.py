"""Bearer tokens, stored hashed in ``salesplan_tokens`` beside the events.

A token reads ``sp_<id>_<secret>``: the id finds the row, the secret is checked against its
SHA-256 (never stored). A token carries a role (admin, manager, rep, viewer) and, for reps
and managers, the member it speaks for; revoking it stamps ``revoked_at`` and it stops
working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa

from domain.persistence import Database

ROLES: Final = ("admin", "manager", "rep", "viewer")
MEMBER_ROLES: Final = ("manager", "rep")

tokens_metadata = sa.MetaData()
tokens_table = sa.Table(
    "salesplan_tokens",
    tokens_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("member_id", sa.Uuid, nullable=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

_TOKEN_RE: Final = re.compile(r"^sp_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")


@dataclass(frozen=True)
class TokenInfo:
    id: str
    role: str
    member_id: UUID | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


class TokenError(ValueError):
    """A token could not be created or revoked as asked."""


def ensure_table(database: Database) -> None:
    tokens_metadata.create_all(database.engine, checkfirst=True)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    database: Database, *, role: str | None = None, member_id: UUID | None = None, label: str = ""
) -> tuple[str, str]:
    """Issue a token; returns ``(token_id, bearer)`` — the bearer is shown once and never stored.

    A member's token takes the member's role (rep or manager) unless ``role`` says admin or
    viewer; rep and manager tokens must name their member.
    """
    member_role = _member_role(database, member_id) if member_id is not None else None
    role = role or member_role
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}")
    if role in MEMBER_ROLES:
        if member_id is None:
            raise TokenError(f"a {role} token must name its member")
        if role != member_role:
            raise TokenError(f"member {member_id} is a {member_role}, not a {role}")
    if len(label) > 200 or "\x00" in label:
        raise TokenError("label must be at most 200 characters, without NUL")
    ensure_table(database)
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with database.engine.begin() as conn:
        conn.execute(tokens_table.insert().values(
            id=token_id, hash=_hash(secret), member_id=member_id, role=role, label=label,
            created_at=datetime.now(UTC), revoked_at=None,
        ))
    return token_id, f"sp_{token_id}_{secret}"


def _member_role(database: Database, member_id: UUID) -> str:
    from domain.application import SalesPlanning
    from domain.errors import NotFound
    from domain.organisation import Member

    try:
        member = SalesPlanning(database).get(Member, member_id)
    except NotFound:
        raise TokenError(f"member {member_id} does not exist") from None
    if not member.active:
        raise TokenError(f"member {member_id} is deactivated")
    return str(member.role)


_revocation_listeners: weakref.WeakSet[Any] = weakref.WeakSet()


def on_revoke(listener: Any) -> None:
    """Call ``listener.revoked(token_id)`` whenever this process revokes a token (caches of verified tokens)."""
    _revocation_listeners.add(listener)


def revoke_token(database: Database, token_id: str) -> bool:
    """Revoke a token at once; False if there is no such active token."""
    ensure_table(database)
    with database.engine.begin() as conn:
        revoked = bool(conn.execute(
            tokens_table.update().where(tokens_table.c.id == token_id, tokens_table.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        ).rowcount)
    for listener in list(_revocation_listeners):
        listener.revoked(token_id)
    return revoked


def token_info(database: Database, token_id: str) -> TokenInfo | None:
    """The token with this id (revoked or not), or None."""
    t = tokens_table.c
    with database.engine.connect() as conn:
        r = conn.execute(sa.select(t.id, t.role, t.member_id, t.label, t.created_at, t.revoked_at)
                         .where(t.id == token_id)).first()
    return None if r is None else TokenInfo(r.id, r.role, r.member_id, r.label, r.created_at, r.revoked_at)


def list_tokens(database: Database) -> list[TokenInfo]:
    """Every token issued, newest first (no secrets: they are not stored)."""
    ensure_table(database)
    t = tokens_table.c
    with database.engine.connect() as conn:
        rows = conn.execute(sa.select(t.id, t.role, t.member_id, t.label, t.created_at, t.revoked_at)
                            .order_by(t.created_at.desc(), t.id)).all()
    return [TokenInfo(r.id, r.role, r.member_id, r.label, r.created_at, r.revoked_at) for r in rows]


def verify_token(database: Database, bearer: str) -> TokenInfo | None:
    """The active token this bearer string proves, or None (unknown, wrong secret, revoked)."""
    match = _TOKEN_RE.match(bearer)
    if match is None:
        return None
    token_id, secret = match.groups()
    t = tokens_table.c
    with database.engine.connect() as conn:
        row = conn.execute(sa.select(tokens_table).where(t.id == token_id)).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, _hash(secret)):
        return None
    return TokenInfo(row.id, row.role, row.member_id, row.label, row.created_at, row.revoked_at)

"""Who is asking, and what they may touch.

Authentication happens in ``AuthMiddleware``, before a request body is even parsed, so a
request without a valid token gets 401 whatever else is wrong with it. Authorization is
``Guard``, called by each route before it runs its one command or query:

    admin    everything
    manager  writes units, members, plans and targets, tasks, deals and activities within the
             subtree of their own unit (as it is now); accounts too. Reads everything.
    rep      their own deals, tasks and activities (another rep's deal or task is 404, read or
             write); reads their unit's progress, the organisation, the catalogue and plans.
             Reassigning is a manager's decision: 403.
    viewer   read-only, for reporting services (and the only role besides admin that reads
             the raw change feed and the metrics); any write is 403.

Products (prices) are admin-only. Nothing is written when a request is refused: the guard
runs before the command.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
import sqlalchemy.exc
from eventsourcing.persistence import OperationalError as StoreOperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from api.errors import ApiProblem, problem_response
from api.tokens import TokenInfo, on_revoke, verify_token
from domain.application import SalesPlanning
from domain.deal import Activity, Deal
from domain.errors import NotFound
from domain.organisation import Member, Unit
from domain.plan import Plan
from domain.task import Task

log = logging.getLogger("salesplan.api")

PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
INSECURE_HEADER: Final = "X-Salesplan-Insecure"
SCOPE_KEY: Final = "salesplan.principal"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Principal:
    role: str
    member_id: UUID | None
    token_id: str | None
    label: str = ""

    @property
    def actor(self) -> str:
        """Who the events will say did it: the member, or else the token (short, bounded, traceable)."""
        if self.member_id is not None:
            return str(self.member_id)
        return f"{self.role}:{self.token_id or self.label}"

    @property
    def subject(self) -> str:
        """The namespace of this caller's idempotency keys."""
        return self.token_id or "dev"


DEV_PRINCIPAL: Final = Principal(role="admin", member_id=None, token_id=None, label="insecure-no-auth")


class AuthMiddleware:
    """Bearer-token authentication for every non-public path; 401 problems otherwise."""

    def __init__(self, app: ASGIApp, insecure_no_auth: bool = False) -> None:
        self.app = app
        self.insecure_no_auth = insecure_no_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.insecure_no_auth:
            send = _marking(send)
        if scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        principal: Principal | None = None
        if header is not None:
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                try:
                    services = scope["app"].state.services
                    info = services.tokens.get(credentials.strip())
                    if info is None:
                        info = await run_in_threadpool(verify_token, services.database, credentials.strip())
                        if info is not None:
                            services.tokens.put(credentials.strip(), info)
                except (sqlalchemy.exc.OperationalError, StoreOperationalError) as error:
                    log.warning("token lookup failed: %s", error)
                    response = problem_response(503, "store.unavailable", "the database is unavailable: retry shortly",
                                                instance=scope["path"], headers={"Retry-After": "1"})
                    await response(scope, receive, send)
                    return
                if info is not None:
                    principal = Principal(info.role, info.member_id, info.id, info.label)
            if principal is None:
                await _unauthorized("auth.invalid_token", "the bearer token is malformed, unknown or revoked", scope,
                                    receive, send)
                return
        elif self.insecure_no_auth:
            principal = DEV_PRINCIPAL
        else:
            await _unauthorized("auth.missing_token", "send Authorization: Bearer <token> (salesplan token create)",
                                scope, receive, send)
            return
        scope[SCOPE_KEY] = principal
        await self.app(scope, receive, send)


async def _unauthorized(rule: str, detail: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(401, rule, detail, instance=scope["path"],
                                headers={"WWW-Authenticate": 'Bearer realm="salesplan"'})
    await response(scope, receive, send)


def _marking(send: Send) -> Send:
    async def marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (INSECURE_HEADER.lower().encode(), b"no-auth")]
        await send(message)

    return marked


class VerifiedTokens:
    """Bearer tokens this process verified within the last ``max_age`` seconds, so that a client's burst of
    requests costs one token lookup, not one each.

    A revocation in this process drops its token at once; one made elsewhere (the CLI, another
    worker) takes effect within ``max_age``, as a change to the organisation does in the
    ``Directory``. Only valid tokens are kept, at most ``size`` of them.
    """

    def __init__(self, max_age: float = 0.05, size: int = 10_000) -> None:
        self.max_age = max_age
        self.size = size
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[TokenInfo, float]] = {}
        on_revoke(self)

    def get(self, bearer: str) -> TokenInfo | None:
        found = self._verified.get(bearer)
        if found is None or time.monotonic() - found[1] >= self.max_age:
            return None
        return found[0]

    def put(self, bearer: str, info: TokenInfo) -> None:
        with self._lock:
            if len(self._verified) >= self.size:
                self._verified.clear()
            self._verified[bearer] = (info, time.monotonic())

    def revoked(self, token_id: str) -> None:
        with self._lock:
            self._verified = {b: v for b, v in self._verified.items() if v[0].id != token_id}


# --- what the guard knows of the organisation ----------------------------------------------


@dataclass(frozen=True)
class MemberInfo:
    unit_id: UUID
    role: str
    active: bool


@dataclass(frozen=True)
class UnitInfo:
    parent_id: UUID | None
    active: bool


class Directory:
    """Members' units and units' parents, as authorization needs them, cached in this process.

    Kept current from the log: before answering, it reads which units and members the events
    appended since it last looked have changed (one indexed range read of the log's tail) and
    forgets those, at most once per ``max_age`` seconds; what this process saves itself is
    forgotten at once (``forget``). So a request pays one small read instead of loading the
    caller's member and every unit up the tree as aggregates. A change made by another process
    is seen within ``max_age``.
    """

    TOPICS: Final = "domain.organisation:%"

    def __init__(self, planning: SalesPlanning, max_age: float = 0.05) -> None:
        self.planning = planning
        self.max_age = max_age
        self._lock = threading.Lock()
        self._members: dict[UUID, MemberInfo] = {}
        self._units: dict[UUID, UnitInfo] = {}
        self._position = planning.recorder.max_notification_id() or 0
        self._checked = time.monotonic()
        self._generation = 0
        events = planning.recorder.events_table_name  # type: ignore[attr-defined]
        self._changes = sa.text(
            f"SELECT id, originator_id FROM {events} WHERE id > :position AND topic LIKE :topics "
            f"UNION ALL SELECT max(id), NULL FROM {events}"
        )

    def member(self, member_id: UUID, field: str | None = None) -> MemberInfo:
        """The member as the store has it now (NotFound naming ``field`` when there is none)."""
        self._refresh()
        info = self._members.get(member_id)
        if info is None:
            seen = self._generation
            m = self.planning.get(Member, member_id, field)
            info = MemberInfo(m.unit_id, m.role, m.active)
            self._keep(seen, self._members, member_id, info)
        return info

    def fresh_member(self, member_id: UUID) -> MemberInfo | None:
        """The member if known and checked against the log within ``max_age``; None (without any I/O) otherwise."""
        if time.monotonic() - self._checked >= self.max_age:
            return None
        return self._members.get(member_id)

    def unit(self, unit_id: UUID, field: str | None = None) -> UnitInfo:
        self._refresh()
        info = self._units.get(unit_id)
        if info is None:
            seen = self._generation
            u = self.planning.get(Unit, unit_id, field)
            info = UnitInfo(u.parent_id, u.active)
            self._keep(seen, self._units, unit_id, info)
        return info

    def _keep(self, seen: int, cache: dict[UUID, Any], entity: UUID, info: Any) -> None:
        # Only if nothing was forgotten while it loaded: it might have been this very entity.
        with self._lock:
            if self._generation == seen:
                cache[entity] = info

    def forget(self, ids: Iterable[UUID]) -> None:
        with self._lock:
            self._generation += 1
            for entity in ids:
                self._members.pop(entity, None)
                self._units.pop(entity, None)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.max_age:
            return
        with self._lock:
            if now - self._checked < self.max_age:
                return
            with self.planning.database.engine.connect() as conn:
                rows = conn.execute(self._changes, {"position": self._position, "topics": self.TOPICS}).all()
            for position, entity in rows:
                if entity is not None:
                    self._generation += 1
                    changed = entity if isinstance(entity, UUID) else (
                        UUID(bytes=entity) if isinstance(entity, bytes) else UUID(str(entity)))
                    self._members.pop(changed, None)
                    self._units.pop(changed, None)
                elif position is not None:
                    self._position = max(self._position, int(position))
            self._checked = now


# --- authorization ---------------------------------------------------------------------


def forbidden(rule: str, detail: str) -> ApiProblem:
    return ApiProblem(403, rule, detail)


@dataclass
class Guard:
    """One request's authorization checks, against the write model's current state (the organisation
    through the ``Directory``)."""

    principal: Principal
    planning: SalesPlanning
    directory: Directory

    @property
    def role(self) -> str:
        return self.principal.role

    def member(self) -> MemberInfo:
        assert self.principal.member_id is not None, "only member tokens have a member"
        return self.directory.member(self.principal.member_id)

    # --- roles ---

    def writer(self) -> None:
        if self.role == "viewer":
            raise forbidden("auth.read_only", "a viewer token is read-only")

    def admin(self) -> None:
        self.writer()
        if self.role != "admin":
            raise forbidden("auth.admin_only", "only an admin may do this")

    def reporting(self) -> None:
        """The raw change feed and the metrics are for admins and reporting services."""
        if self.role not in ("admin", "viewer"):
            raise forbidden("auth.reporting_only", "only admin and viewer tokens read the change feed and metrics")

    def not_rep(self) -> None:
        self.writer()
        if self.role == "rep":
            raise forbidden("auth.manager_only", "only a manager or an admin may do this")

    # --- the organisation ---

    def within(self, unit_id: UUID | None) -> bool:
        """Whether a unit lies in the subtree of the calling manager's unit."""
        if self.role == "admin":
            return True
        if self.role != "manager" or unit_id is None:
            return False
        home = self.member().unit_id
        seen: set[UUID] = set()
        current: UUID | None = unit_id
        while current is not None and current not in seen:
            if current == home:
                return True
            seen.add(current)
            try:
                current = self.directory.unit(current).parent_id
            except NotFound:
                return False
        return False

    def manage_unit(self, unit_id: UUID | None, field: str = "unit_id") -> None:
        """Writes on a unit (or beneath it): an admin, or a manager of a unit above it."""
        self.not_rep()
        if unit_id is not None and self.role == "manager":
            self.directory.unit(unit_id, field)  # a missing unit is a 404, not a 403
        if not self.within(unit_id):
            raise forbidden("auth.outside_your_units", "this is outside the units you manage")

    def manage_member(self, member_id: UUID, field: str = "member_id") -> MemberInfo:
        self.not_rep()
        member = self.directory.member(member_id, field)
        self.manage_unit(member.unit_id)
        return member

    def manage_plan(self, plan_id: UUID) -> Plan:
        self.not_rep()
        plan = self.planning.get(Plan, plan_id)
        self.manage_unit(plan.unit_id)
        return plan

    def manage_scope(self, unit_id: UUID | None, member_id: UUID | None, field: str = "scope") -> None:
        """A target's owner must be within the manager's units too (a manager plans only for their people)."""
        if self.role != "manager":
            return
        if unit_id is not None:
            self.manage_unit(unit_id, f"{field}/unit_id")
        if member_id is not None:
            self.manage_unit(self.directory.member(member_id, f"{field}/member_id").unit_id)

    def manage_parts(self, by: str, parts: list[str]) -> None:
        """Decomposing by unit or member: each part must be the manager's to plan for."""
        if self.role != "manager" or by not in ("unit", "member"):
            return
        for i, part in enumerate(parts):
            try:
                owner = UUID(part)
            except ValueError:
                continue  # not an id: the domain refuses it with its own rule
            if by == "unit":
                self.manage_unit(owner, f"parts/{i}")
            else:
                self.manage_unit(self.directory.member(owner, f"parts/{i}").unit_id)

    def act_for(self, member_id: UUID, field: str) -> None:
        """Create a deal, task or activity for a member: the rep themselves, or their manager."""
        self.writer()
        if self.role == "admin":
            return
        if self.role == "rep":
            if member_id != self.principal.member_id:
                raise forbidden("auth.not_yours", f"a rep can only use their own id as {field}")
            return
        member = self.directory.member(member_id, field)
        if not self.within(member.unit_id):
            raise forbidden("auth.outside_your_units", f"{field} is not in the units you manage")

    def _owned(self, owner_id: UUID, write: bool) -> None:
        """A manager changes only what belongs to people in their units (as they are now)."""
        if write and self.role == "manager" and not self.within(self.directory.member(owner_id).unit_id):
            raise forbidden("auth.outside_your_units", "this belongs to someone outside the units you manage")

    def deal(self, deal_id: UUID, *, write: bool) -> Deal:
        """A deal the caller may see (another rep's deal does not exist for a rep) or change."""
        if write:
            self.writer()
        deal = self.planning.get(Deal, deal_id)
        if self.role == "rep" and deal.owner_id != self.principal.member_id:
            raise NotFound("deal", deal_id)
        self._owned(deal.owner_id, write)
        return deal

    def deal_field(self, deal_id: UUID, field: str) -> None:
        """A deal named in a body (an activity's deal): a rep may only name their own."""
        deal = self.planning.get(Deal, deal_id, field)
        if self.role == "rep" and deal.owner_id != self.principal.member_id:
            raise NotFound("deal", deal_id, field)

    def activity(self, activity_id: UUID) -> Activity:
        activity = self.planning.get(Activity, activity_id)
        if self.role == "rep" and activity.member_id != self.principal.member_id:
            raise NotFound("activity", activity_id)
        return activity

    def task(self, task_id: UUID, *, write: bool) -> Task:
        if write:
            self.writer()
        task = self.planning.get(Task, task_id)
        if self.role == "rep" and task.assignee_id != self.principal.member_id:
            raise NotFound("task", task_id)
        self._owned(task.assignee_id, write)
        return task

    def rep_unit(self) -> UUID | None:
        """The unit a rep's reads are confined to (None for everyone else)."""
        return self.member().unit_id if self.role == "rep" else None

    def own_unit(self, unit_id: UUID | None) -> UUID | None:
        """A unit filter as the caller may use it: a rep's reads are confined to their unit."""
        home = self.rep_unit()
        if home is None:
            return unit_id
        if unit_id is not None and unit_id != home:
            raise ApiProblem(403, "auth.outside_your_unit", "a rep reads their own unit only", parameter="unit_id")
        return home

    def own_member(self, member_id: UUID | None, parameter: str) -> UUID | None:
        """A member filter as the caller may use it: a rep sees only their own deals and tasks in lists."""
        if self.role != "rep":
            return member_id
        if member_id is not None and member_id != self.principal.member_id:
            raise ApiProblem(403, "auth.not_yours", f"a rep lists only their own ({parameter})", parameter=parameter)
        return self.principal.member_id

    def auditor(self) -> None:
        """The audit history spans everyone's changes: admins, managers and reporting services."""
        if self.role == "rep":
            raise forbidden("auth.no_audit", "the audit history is for managers, admins and reporting services")

    # --- retrospectives, analytics, reports and alerts ---

    def read_scope(self, unit_id: UUID | None = None, member_id: UUID | None = None, *, own_only: bool = False,
                   parameter: str = "unit_id") -> None:
        """A read about a unit or a member: a manager's units and people (as they are now); a rep's own unit.

        ``own_only``: a rep reads only themselves (their member report), not their colleagues.
        """
        if self.role in ("admin", "viewer"):
            return
        if member_id is not None:
            member = self.directory.member(member_id, "member_id")  # a missing member is a 404, not a 403
            if self.role == "rep":
                if member_id != self.principal.member_id and (own_only or member.unit_id != self.rep_unit()):
                    raise ApiProblem(403, "auth.not_yours", "a rep reads only their own (or their unit's) figures",
                                     parameter="member_id")
                return
            unit_id = member.unit_id
        elif unit_id is not None and self.role == "manager":
            self.directory.unit(unit_id, parameter)
        if self.role == "rep":
            if unit_id != self.rep_unit():
                raise ApiProblem(403, "auth.outside_your_unit", "a rep reads their own unit only", parameter=parameter)
            return
        if not self.within(unit_id):
            raise ApiProblem(403, "auth.outside_your_units", "this is outside the units you manage", parameter=parameter)

    def scoped_unit(self, unit_id: UUID | None) -> UUID | None:
        """A unit filter for lists and funnels: a rep's own unit, a manager's unit (or one beneath it)."""
        if self.role == "rep":
            return self.own_unit(unit_id)
        if self.role == "manager":
            if unit_id is None:
                return self.member().unit_id
            self.read_scope(unit_id)
        return unit_id

    def sees_alert(self, unit_id: UUID | None, owner_ids: tuple[UUID, ...]) -> bool:
        """An alert the caller may read: its owners, a manager above its unit, admins and viewers."""
        if self.role in ("admin", "viewer"):
            return True
        if self.principal.member_id in owner_ids:
            return True
        return self.role == "manager" and self.within(unit_id)

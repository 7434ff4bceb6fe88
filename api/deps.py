"""Dependencies, as ``Annotated`` aliases: the services, the caller, and the command context.

``Services`` is built once by the app's lifespan (never at import time). ``CreateCommand`` and
``ChangeCommand`` give a route everything a command needs around its one application call:
the actor, the idempotency key with the request's fingerprint, ``If-Match`` as the expected
version (required on changes: 428 without it), and the response headers (``ETag``,
``Location``) afterwards.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from uuid import UUID

import sqlalchemy as sa
from fastapi import Depends, Header, Query, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.auth import SCOPE_KEY, Directory, Guard, MemberInfo, Principal, VerifiedTokens
from api.errors import ApiProblem
from api.metrics import Metrics
from api.schemas import Body, CommandOut, Instant
from api.settings import Settings
from domain.application import CommandResult, Idempotency, SalesPlanning
from domain.errors import NotFound
from domain.persistence import Database
from projections.engine import ProjectionEngine, tracking_table
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig
from projections.measure.cuts import position_known_at

MAX_POSITION: Final = 2**62

_appended = threading.local()


class CountingPlanning(SalesPlanning):
    """SalesPlanning that tells the metrics how many events each command appended, and the guard's
    directory which units and members it changed."""

    name = SalesPlanning.name  # the library names tables after the class otherwise
    directory: Directory | None = None

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        recordings = super().save(*objs, **kwargs)
        _appended.count = getattr(_appended, "count", 0) + len(recordings)
        if self.directory is not None:
            self.directory.forget(r.domain_event.originator_id for r in recordings)
        return recordings


@dataclass
class Services:
    """What the lifespan builds: the settings, the database, the application, the projections."""

    settings: Settings
    database: Database
    planning: SalesPlanning
    engine: ProjectionEngine
    metrics: Metrics
    directory: Directory
    tokens: VerifiedTokens
    stop: threading.Event = field(default_factory=threading.Event)
    worker: threading.Thread | None = None

    def measure_config(self) -> MeasureConfig:
        return self.settings.measure_config()

    def wait_for(self, position: int | None, names: Iterable[str] | None = None) -> None:
        """Read-your-writes: block until the projections reach ``position``, within the configured bound."""
        if position is None or position <= 0:
            return
        head = self.engine.head()
        if position > head:
            # Commands answer only once their events are committed: a position past the head was never issued.
            raise ApiProblem(422, "position.beyond_head", f"position {position} is beyond the log's head ({head})",
                             parameter="wait_for_position", head=head)
        if not self.engine.wait_for(position, self.settings.read_wait_max_seconds, names):
            raise ApiProblem(
                503, "projection.behind",
                f"the projections have not reached position {position} within {self.settings.read_wait_max_seconds}s",
                parameter="wait_for_position", headers={"Retry-After": "1"},
            )


@dataclass(frozen=True)
class CutQuery:
    """Which moment a projection read answers for, on both clocks (see ``projections.history.Cut``)."""

    as_of: datetime | None = None
    known_at: datetime | None = None
    known_at_position: int | None = None
    wait_for_position: int | None = None

    def names(self, projections: tuple[str, ...]) -> tuple[str, ...]:
        return (*projections, "log_clock") if self.known_at is not None else projections

    @property
    def at(self) -> datetime:
        """When pace, overdue and days-in-stage are measured: the effective cut, or now."""
        return self.as_of or self.known_at or datetime.now(UTC)


@contextmanager
def reading(services: Services, projections: tuple[str, ...], query: CutQuery = CutQuery()
            ) -> Iterator[tuple[sa.Connection, Cut]]:
    """A connection and the cut to read the projections at: by default everything they have applied.

    The position is the lowest the named projections have all reached, so a read never mixes
    what one of them knows with what another does not know yet.
    """
    names = query.names(projections)
    services.wait_for(max(query.wait_for_position or 0, query.known_at_position or 0), names)
    with services.database.engine.connect() as conn:
        positions = conn.execute(
            sa.select(tracking_table.c.position).where(tracking_table.c.name.in_(names))
        ).scalars().all()
        position = min(positions) if len(positions) == len(names) else 0
        if query.known_at is not None:
            position = min(position, position_known_at(conn, query.known_at))
        if query.known_at_position is not None:
            position = min(position, query.known_at_position)
        yield conn, Cut(position, query.as_of or query.known_at)


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

# Declares the scheme in OpenAPI (and /docs); the AuthMiddleware has already checked the token.
_bearer = HTTPBearer(auto_error=False, description="A token from `salesplan token create`.")


async def get_principal(
    request: Request, services: ServicesDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    # Async: most requests need no database here (an admin or viewer token, or a member the
    # directory knows freshly), and a thread hop per request costs more than the check itself.
    principal: Principal | None = request.scope.get(SCOPE_KEY)
    if principal is None:
        raise ApiProblem(401, "auth.missing_token", "send Authorization: Bearer <token>")
    if principal.member_id is not None:
        member = services.directory.fresh_member(principal.member_id)
        if member is None:
            member = await run_in_threadpool(_member_or_none, services.directory, principal.member_id)
        if member is None or not member.active:
            raise ApiProblem(401, "auth.member_inactive", "the token's member no longer exists or was deactivated")
    return principal


def _member_or_none(directory: Directory, member_id: UUID) -> MemberInfo | None:
    try:
        return directory.member(member_id)
    except NotFound:
        return None


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_guard(principal: PrincipalDep, services: ServicesDep) -> Guard:
    return Guard(principal, services.planning, services.directory)


GuardDep = Annotated[Guard, Depends(get_guard)]

WaitForPosition = Annotated[
    int | None,
    Query(ge=0, le=MAX_POSITION, description="Answer only once the projections have reached this log position "
                                             "(a command's `position`); bounded by the server's read wait."),
]

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", pattern=r"^[\x21-\x7e]{1,100}$",
           description="Retries with the same key return the first answer and append nothing."),
]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=40, description='The ETag of the entity as read, e.g. "3" (required).'),
]

AsOf = Annotated[Instant | None, Query(description="Count only what was effective up to this time (RFC 3339). "
                                                  "Default: everything, measured now.")]
KnownAt = Annotated[Instant | None, Query(description="Answer as the system knew it at this recorded time (RFC 3339); "
                                                      "as_of defaults to it.")]
KnownAtPosition = Annotated[int | None, Query(ge=0, le=MAX_POSITION, description="Answer as known at this log position.")]


async def get_cut_query(as_of: AsOf = None, known_at: KnownAt = None, known_at_position: KnownAtPosition = None,
                        wait_for_position: WaitForPosition = None) -> CutQuery:
    if known_at is not None and known_at_position is not None:
        raise ApiProblem(422, "cut.ambiguous", "give known_at or known_at_position, not both",
                         parameter="known_at_position")
    return CutQuery(as_of, known_at, known_at_position, wait_for_position)


CutDep = Annotated[CutQuery, Depends(get_cut_query)]

_ETAG: Final = re.compile(r'^"?(\d{1,12})"?$')


@dataclass
class _Command:
    services: Services
    principal: Principal
    guard: Guard
    request: Request
    response: Response
    idempotency_key: str | None

    @property
    def planning(self) -> SalesPlanning:
        return self.services.planning

    def _idempotency(self, body: Body) -> Idempotency | None:
        if self.idempotency_key is None:
            return None
        request = json.dumps({"method": self.request.method, "path": self.request.url.path,
                              "body": body.model_dump(mode="json")}, sort_keys=True)
        return Idempotency(f"{self.principal.subject}:{self.idempotency_key}",
                           hashlib.sha256(request.encode()).hexdigest())

    def _call(self, call: Callable[..., CommandResult], body: Body, location: str, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> CommandOut:
        _appended.count = 0
        result = call(*args, actor=self.principal.actor, effective_at=body.effective_at,
                      idempotency=self._idempotency(body), **kwargs)
        self.services.metrics.observe_events(getattr(_appended, "count", 0))
        self.services.engine.wake.set()
        self.response.headers["ETag"] = f'"{result.version}"'
        self.response.headers["Location"] = location.format(id=result.id)
        return CommandOut(id=result.id, version=result.version, position=result.position, **result.details)


@dataclass
class CreateCommand(_Command):
    """A command that creates an entity (201, ``Location`` of the new entity)."""

    def run(self, call: Callable[..., CommandResult], body: Body, location: str, *args: Any, **kwargs: Any
            ) -> CommandOut:
        return self._call(call, body, location, args, kwargs)


@dataclass
class ChangeCommand(_Command):
    """A command on an existing entity: ``If-Match`` carries the version it was read at."""

    if_match: str | None = None

    def run(self, call: Callable[..., CommandResult], body: Body, location: str, *args: Any, **kwargs: Any
            ) -> CommandOut:
        if self.if_match is None:
            raise ApiProblem(428, "precondition.if_match_required",
                             'send If-Match with the ETag you read (e.g. "3"): changes need it', parameter="If-Match")
        expected: int | None = None  # If-Match: * matches any version of an entity that exists
        if self.if_match.strip() != "*":
            match = _ETAG.match(self.if_match.strip())
            # An ETag this API never issued can match no version: the domain then answers 412 with the current one.
            expected = int(match.group(1)) if match else -1
        return self._call(call, body, location, args, {**kwargs, "expected_version": expected})


async def get_create_command(
    services: ServicesDep, principal: PrincipalDep, guard: GuardDep, request: Request, response: Response,
    idempotency_key: IdempotencyKey = None,
) -> CreateCommand:
    return CreateCommand(services, principal, guard, request, response, idempotency_key)


async def get_change_command(
    services: ServicesDep, principal: PrincipalDep, guard: GuardDep, request: Request, response: Response,
    idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
) -> ChangeCommand:
    return ChangeCommand(services, principal, guard, request, response, idempotency_key, if_match)


CreateDep = Annotated[CreateCommand, Depends(get_create_command)]
ChangeDep = Annotated[ChangeCommand, Depends(get_change_command)]


def etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


async def get_known_query(known_at: KnownAt = None, known_at_position: KnownAtPosition = None,
                          wait_for_position: WaitForPosition = None) -> CutQuery:
    """A cut on the recorded clock only: for answers that choose their own effective times (replays)."""
    return await get_cut_query(None, known_at, known_at_position, wait_for_position)


KnownDep = Annotated[CutQuery, Depends(get_known_query)]

POSITION_HEADER: Final = "Salesplan-Position"


def stamp(response: Response, position: int) -> None:
    """Every projection read says which log position it was computed from (also in its body)."""
    response.headers[POSITION_HEADER] = str(position)

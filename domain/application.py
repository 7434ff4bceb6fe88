"""SalesPlanning: the service layer. Every command loads, calls one aggregate method, saves.

Each command returns a CommandResult carrying the entity's id, its new version and the log
position of its last event, so that a reader can wait for the projections to reach it.
Commands may carry an idempotency key, stored in the same transaction as the events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid4

import sqlalchemy as sa
import sqlalchemy.exc
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import InfrastructureFactory, IntegrityError, JSONTranscoder, OperationalError, Transcoder
from eventsourcing.utils import Environment
from eventsourcing_sqlalchemy.datastore import transactions
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory

from domain import values as v
from domain.aggregate import SalesAggregate
from domain.catalogue import Account, Product
from domain.deal import Activity, Deal
from domain.errors import DomainError, NotFound, RuleViolation, VersionConflict
from domain.organisation import Member, Unit
from domain.persistence import (
    IMMEDIATE,
    BatchingApplicationRecorder,
    Database,
    FastJSONTranscoder,
    bind_processors,
    driver_cursor,
    register_transcodings,
)
from domain.plan import Plan, Spread, window_of
from domain.task import Task

A = TypeVar("A", bound=SalesAggregate)

ENTITY_NAMES: dict[type[SalesAggregate], str] = {
    Unit: "unit", Member: "member", Product: "product", Account: "account", Plan: "plan",
    Task: "task", Deal: "deal", Activity: "activity",
}

idempotency_metadata = sa.MetaData()
idempotency_table = sa.Table(
    "salesplan_idempotency",
    idempotency_metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(128), nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


class StoreUnavailable(Exception):
    """The database is unreachable or a lock could not be had in time: retry later."""


@dataclass(frozen=True)
class CommandResult:
    """What a command answers: the entity, its new version, and the log position of its events."""

    id: UUID
    version: int
    position: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "id": str(self.id)}, default=str)

    @classmethod
    def from_json(cls, data: str) -> CommandResult:
        raw = json.loads(data)
        return cls(id=UUID(raw["id"]), version=raw["version"], position=raw["position"], details=raw["details"])


@dataclass(frozen=True)
class Idempotency:
    """A client's key for a command and a fingerprint of the request it came with."""

    key: str
    fingerprint: str


class _SharedDatastoreFactory(SQLAlchemyFactory):
    """The library's SQLAlchemy factory, on the datastore shared by the whole process."""

    application_recorder_class = BatchingApplicationRecorder

    def __init__(self, env: Environment, database: Database) -> None:
        InfrastructureFactory.__init__(self, env)
        self._schema_name = None
        self.datastore = database.datastore


class SalesPlanning(Application[UUID]):
    """Commands for organisation, catalogue, plans and targets, tasks, deals and activities."""

    name = "salesplan"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The library names the events table after the class: a subclass must keep the same store.
        super().__init_subclass__(**kwargs)
        cls.name = "salesplan"

    def __init__(self, database: Database, clock: Callable[[], datetime] = v.utc_now) -> None:
        self.database = database
        self.clock = clock
        super().__init__(env={"PERSISTENCE_MODULE": "eventsourcing_sqlalchemy"})
        idempotency_metadata.create_all(database.engine, checkfirst=True)

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        return _SharedDatastoreFactory(env, self.database)

    def construct_transcoder(self) -> Transcoder:
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_transcodings(transcoder)

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """The library's save, collecting the events of our aggregates without its protocol checks.

        ``isinstance`` against the library's runtime-checkable protocols costs more per event
        than encoding it; a bulk import saves thousands of aggregates at once. Anything but our
        aggregates (and with snapshots or an aggregate cache, never configured here) goes the
        library's way.
        """
        if self.snapshots is not None or self.repository.cache is not None or not all(
                isinstance(o, SalesAggregate) for o in objs):
            return super().save(*objs, **kwargs)
        events = [event for aggregate in objs for event in aggregate.collect_events()]
        recordings = self.events.put(events, tracking=None, **kwargs)
        self._notify(recordings)
        return recordings

    # --- the unit of work ---------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        try:
            outermost = transactions.get(None) is None
            with self.database.datastore.transaction(commit=True) as session:
                if outermost:
                    session.connection(execution_options=IMMEDIATE)
                yield session
        except OperationalError as e:
            raise StoreUnavailable(str(e)) from e
        except sqlalchemy.exc.OperationalError as e:
            raise StoreUnavailable(str(e.orig)) from e

    def run(
        self, command: Callable[[datetime], tuple[list[SalesAggregate], CommandResult]],
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Run a command once: its events and its idempotency record commit together or not at all.

        The key is not looked up first: it is claimed in the statement that appends the events,
        and its unique index refuses a second claim (a retry, or a concurrent twin) before any
        event is inserted; the refused one answers what the first one recorded. A retry can also
        be refused by the command itself (the version it names has moved on, the id it gives is
        taken, the deal is already won): the record is looked for then too. So the usual command
        costs no lookup.
        """
        try:
            with self._transaction() as session:
                aggregates, result = command(self.clock())
                claim = self._claim(session, idempotency) if idempotency is not None else None
                recordings = self.save(*aggregates, prelude=claim)
                if recordings:
                    result = CommandResult(result.id, result.version, recordings[-1].notification.id, result.details)
                if idempotency is not None:
                    if recordings:  # claimed with the events: now say what the command answered
                        conn = session.connection()
                        mark = "%s" if conn.dialect.name == "postgresql" else "?"
                        sql = f"UPDATE {idempotency_table.name} SET result = {mark} WHERE key = {mark}"
                        with driver_cursor(conn, sql) as cursor:
                            cursor.execute(sql, (result.to_json(), idempotency.key))
                    else:
                        session.execute(idempotency_table.insert().values(
                            key=idempotency.key, fingerprint=idempotency.fingerprint, result=result.to_json(),
                            recorded_at=self.clock()))
                return result
        except DomainError:
            stored = self._recorded(idempotency)
            if stored is not None:
                return stored
            raise
        except (IntegrityError, sqlalchemy.exc.IntegrityError):
            # Either a retry (or a concurrent twin) claimed the same key first, or another writer
            # appended to one of these aggregates first.
            stored = self._recorded(idempotency)
            if stored is not None:
                return stored
            raise self._conflict(command) from None

    def _claim(self, session: Any, idempotency: Idempotency) -> tuple[str, list[Any]]:
        """The driver-level INSERT that claims a key (its answer is filled in once the events have positions)."""
        dialect = session.connection().dialect
        mark = "%s" if dialect.name == "postgresql" else "?"
        (at,) = (p(self.clock()) if p else self.clock()
                 for p in bind_processors(idempotency_table, ["recorded_at"], dialect))
        sql = (f"INSERT INTO {idempotency_table.name} (key, fingerprint, result, recorded_at) "
               f"VALUES ({mark}, {mark}, '', {mark})")
        return sql, [idempotency.key, idempotency.fingerprint, at]

    def _recorded(self, idempotency: Idempotency | None) -> CommandResult | None:
        if idempotency is None:
            return None
        with self._transaction() as session:
            return self._stored_result(session, idempotency)

    def _stored_result(self, session: Any, idempotency: Idempotency) -> CommandResult | None:
        row = session.execute(
            sa.select(idempotency_table.c.fingerprint, idempotency_table.c.result).where(
                idempotency_table.c.key == idempotency.key
            )
        ).first()
        if row is None:
            return None
        if row.fingerprint != idempotency.fingerprint:
            raise RuleViolation(
                "idempotency.key_reused", "this Idempotency-Key was used with a different request", "Idempotency-Key"
            )
        return CommandResult.from_json(row.result)

    def _conflict(self, command: Callable[..., Any]) -> DomainError:
        entity_id = getattr(command, "entity_id", None)
        if entity_id is None:
            return RuleViolation("concurrency.conflict", "another writer changed this data first: retry", None)
        try:
            current: int = self.repository.get(entity_id).version
        except AggregateNotFoundError:
            current = 0
        return VersionConflict(entity_id, getattr(command, "expected_version", None), current)

    def get(self, cls: type[A], entity_id: UUID, field: str | None = None) -> A:
        """Load an aggregate of the given type, or raise NotFound naming the field."""
        try:
            aggregate: Any = self.repository.get(entity_id)
        except AggregateNotFoundError:
            raise NotFound(ENTITY_NAMES[cls], entity_id, field) from None
        if not isinstance(aggregate, cls):
            raise NotFound(ENTITY_NAMES[cls], entity_id, field)
        return aggregate

    def _create(
        self, make: Callable[[datetime], SalesAggregate], effective_at: datetime | None,
        idempotency: Idempotency | None, details: Callable[[Any], dict[str, Any]] | None = None,
    ) -> CommandResult:
        def command(now: datetime) -> tuple[list[SalesAggregate], CommandResult]:
            aggregate = make(v.effective_time(effective_at, now))
            extra = details(aggregate) if details else {}
            return [aggregate], CommandResult(aggregate.id, aggregate.version, 0, extra)

        return self.run(command, idempotency)

    def _change(
        self, cls: type[A], entity_id: UUID, expected_version: int | None,
        change: Callable[[A, datetime], dict[str, Any] | None], effective_at: datetime | None,
        idempotency: Idempotency | None,
    ) -> CommandResult:
        def command(now: datetime) -> tuple[list[SalesAggregate], CommandResult]:
            aggregate = self.get(cls, entity_id)
            if expected_version is not None and aggregate.version != expected_version:
                raise VersionConflict(entity_id, expected_version, aggregate.version)
            extra = change(aggregate, v.effective_time(effective_at, now)) or {}
            return [aggregate], CommandResult(aggregate.id, aggregate.version, 0, extra)

        command.entity_id = entity_id  # type: ignore[attr-defined]
        command.expected_version = expected_version  # type: ignore[attr-defined]
        return self.run(command, idempotency)

    def _check_new(self, cls: type[SalesAggregate], entity_id: UUID, given: UUID | None) -> None:
        if given is None:
            return  # a fresh uuid4: nothing can hold it, so spare the round trip
        try:
            self.repository.get(entity_id)
        except AggregateNotFoundError:
            return
        raise RuleViolation(f"{ENTITY_NAMES[cls]}.id_taken", f"{entity_id} already exists", "id")

    def active_unit(self, unit_id: UUID, field: str = "unit_id") -> Unit:
        unit = self.get(Unit, unit_id, field)
        if not unit.active:
            raise RuleViolation("unit.inactive", f"unit {unit_id} is deactivated", field)
        return unit

    def active_member(self, member_id: UUID, field: str = "member_id") -> Member:
        member = self.get(Member, member_id, field)
        member.check_active(field)
        return member

    # --- organisation -------------------------------------------------------------------

    def add_unit(
        self, *, name: str, parent_id: UUID | None = None, actor: str, id: UUID | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Add a unit (company, region, office, team) under an optional parent."""
        unit_id = id or uuid4()

        def make(at: datetime) -> Unit:
            self._check_new(Unit, unit_id, given=id)
            if parent_id is not None:
                self.active_unit(parent_id, "parent_id")
            return Unit.add(id=unit_id, name=v.text(name, "name"), parent_id=parent_id, actor=actor, effective_at=at)

        return self._create(make, effective_at, idempotency)

    def rename_unit(
        self, unit_id: UUID, *, name: str, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Unit, unit_id, expected_version,
            lambda u, at: u.rename(v.text(name, "name"), actor=actor, effective_at=at), effective_at, idempotency,
        )

    def move_unit(
        self, unit_id: UUID, *, parent_id: UUID | None, reason: str | None, actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Re-parent a unit; a unit can never end up beneath itself."""
        def change(unit: Unit, at: datetime) -> None:
            ancestor = parent_id
            while ancestor is not None:
                if ancestor == unit.id:
                    raise RuleViolation("unit.cycle", "a unit cannot move beneath itself", "parent_id")
                ancestor = self.active_unit(ancestor, "parent_id").parent_id
            unit.move(parent_id, v.reason(reason), actor=actor, effective_at=at)

        return self._change(Unit, unit_id, expected_version, change, effective_at, idempotency)

    def deactivate_unit(
        self, unit_id: UUID, *, reason: str | None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Unit, unit_id, expected_version,
            lambda u, at: u.deactivate(v.reason(reason), actor=actor, effective_at=at), effective_at, idempotency,
        )

    def add_member(
        self, *, name: str, role: str, unit_id: UUID, email: str = "", actor: str, id: UUID | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Add a rep or a manager to a unit."""
        member_id = id or uuid4()
        if role not in v.MEMBER_ROLES:
            raise RuleViolation("member.role", f"role must be one of {', '.join(v.MEMBER_ROLES)}", "role",
                                allowed=list(v.MEMBER_ROLES))

        def make(at: datetime) -> Member:
            self._check_new(Member, member_id, given=id)
            self.active_unit(unit_id)
            return Member.add(
                id=member_id, name=v.text(name, "name"), role=role, unit_id=unit_id,
                email=v.text(email, "email", max_length=254, required=False), actor=actor, effective_at=at,
            )

        return self._create(make, effective_at, idempotency)

    def rename_member(
        self, member_id: UUID, *, name: str, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Member, member_id, expected_version,
            lambda m, at: m.rename(v.text(name, "name"), actor=actor, effective_at=at), effective_at, idempotency,
        )

    def move_member(
        self, member_id: UUID, *, unit_id: UUID, reason: str | None = None, actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Move a member to another unit from the effective time on; earlier results stay where they were."""
        def change(member: Member, at: datetime) -> None:
            self.active_unit(unit_id)
            member.move(unit_id, v.optional_reason(reason), actor=actor, effective_at=at)

        return self._change(Member, member_id, expected_version, change, effective_at, idempotency)

    def deactivate_member(
        self, member_id: UUID, *, reason: str | None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Member, member_id, expected_version,
            lambda m, at: m.deactivate(v.reason(reason), actor=actor, effective_at=at), effective_at, idempotency,
        )

    # --- catalogue ----------------------------------------------------------------------

    def add_product(
        self, *, name: str, product_line: str, list_price: Any, currency: str, actor: str, id: UUID | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        product_id = id or uuid4()

        def make(at: datetime) -> Product:
            self._check_new(Product, product_id, given=id)
            return Product.add(
                id=product_id, name=v.text(name, "name"), product_line=v.text(product_line, "product_line"),
                list_price=v.money(list_price, "list_price"), currency=v.currency(currency), actor=actor,
                effective_at=at,
            )

        return self._create(make, effective_at, idempotency)

    def change_list_price(
        self, product_id: UUID, *, list_price: Any, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Product, product_id, expected_version,
            lambda p, at: p.change_list_price(v.money(list_price, "list_price"), actor=actor, effective_at=at),
            effective_at, idempotency,
        )

    def add_account(
        self, *, name: str, segment: str, region: str, actor: str, id: UUID | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        account_id = id or uuid4()

        def make(at: datetime) -> Account:
            self._check_new(Account, account_id, given=id)
            return Account.add(
                id=account_id, name=v.text(name, "name"), segment=v.text(segment, "segment"),
                region=v.text(region, "region"), actor=actor, effective_at=at,
            )

        return self._create(make, effective_at, idempotency)

    def reclassify_account(
        self, account_id: UUID, *, segment: str, region: str, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Account, account_id, expected_version,
            lambda a, at: a.reclassify(v.text(segment, "segment"), v.text(region, "region"), actor=actor,
                                       effective_at=at),
            effective_at, idempotency,
        )

    # --- plans and targets --------------------------------------------------------------

    def draft_plan(
        self, *, name: str, span: str, currency: str, unit_id: UUID, actor: str, id: UUID | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Draft a plan for a fiscal year or a quarter, owned by a unit, in one currency."""
        plan_id = id or uuid4()

        def make(at: datetime) -> Plan:
            self._check_new(Plan, plan_id, given=id)
            self.active_unit(unit_id)
            return Plan.draft(id=plan_id, name=name, span=span, currency=currency, unit_id=unit_id, actor=actor,
                              effective_at=at)

        return self._create(make, effective_at, idempotency)

    def _check_scope(self, scope: v.Scope) -> None:
        if scope.unit_id is not None:
            self.active_unit(scope.unit_id, "scope/unit_id")
        if scope.member_id is not None:
            self.active_member(scope.member_id, "scope/member_id")

    def set_target(
        self, plan_id: UUID, *, metric: str, period: str, scope: v.Scope, committed: Any, stretch: Any = None,
        currency: str | None = None, reason: str | None = None, actor: str, target_id: UUID | None = None,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Set one target (metric × period × scope) with its committed and optional stretch value."""
        new_id = target_id or uuid4()

        def change(plan: Plan, at: datetime) -> dict[str, Any]:
            self._check_scope(scope)
            plan.set_target(target_id=new_id, metric=metric, period=period, scope=scope, committed=committed,
                            stretch=stretch, currency=currency, reason=reason, actor=actor, effective_at=at)
            return {"target_id": str(new_id)}

        return self._change(Plan, plan_id, expected_version, change, effective_at, idempotency)

    def decompose_target(
        self, plan_id: UUID, *, parent_id: UUID, by: str, parts: list[str], method: str = "equal",
        weights: list[Decimal] | None = None, history: list[Decimal] | None = None,
        values: list[Decimal] | None = None, residue_to: int = 0, reason: str | None = None, actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Split a target into children that sum exactly to it; the residue lands on ``parts[residue_to]``.

        Children lie within their parent: a unit must be beneath the parent's unit, a member must
        have belonged to it (or beneath it) at the parent's period start.
        """
        child_ids = [uuid4() for _ in parts]

        def change(plan: Plan, at: datetime) -> dict[str, Any]:
            owner_units: list[list[UUID]] | None = None
            if by in ("unit", "member"):
                owners = []
                for i, part in enumerate(parts):
                    try:
                        owners.append(UUID(part))
                    except (ValueError, TypeError, AttributeError):
                        raise RuleViolation("decomposition.part_id", f"parts/{i} must be a {by} id",
                                            f"parts/{i}") from None
                    if by == "unit":
                        self.active_unit(owners[-1], f"parts/{i}")
                    else:
                        self.active_member(owners[-1], f"parts/{i}")
                parent = plan.targets.get(parent_id)
                if parent is not None:
                    start = window_of(parent)[0]
                    owner_units = [
                        self.unit_ancestry(self.get(Unit, owner).parent_id) if by == "unit"
                        else self.unit_ancestry(self.member_unit_at(owner, start))
                        for owner in owners
                    ]
            plan.decompose(parent_id=parent_id, by=by, parts=parts, child_ids=child_ids, method=method,
                           weights=weights, history=history, values=values, residue_to=residue_to,
                           owner_units=owner_units, reason=reason, actor=actor, effective_at=at)
            return {"child_ids": [str(c) for c in child_ids]}

        return self._change(Plan, plan_id, expected_version, change, effective_at, idempotency)

    def unit_ancestry(self, unit_id: UUID | None) -> list[UUID]:
        """The unit and every unit above it, nearest first (the tree as it stands)."""
        chain: list[UUID] = []
        while unit_id is not None and unit_id not in chain:
            chain.append(unit_id)
            unit_id = self.get(Unit, unit_id).parent_id
        return chain

    def member_unit_at(self, member_id: UUID, day: date) -> UUID:
        """The unit a member belonged to at the start of ``day`` (UTC), from her own history.

        A member who joined later counts in the unit she joined: a target for a period she
        joined during is hers from the start. A member's events take effect in the order they
        were made, so the last move effective by then is where she was.
        """
        at = datetime(day.year, day.month, day.day, tzinfo=UTC)
        unit: UUID | None = None
        for event in self.events.get(member_id):
            if isinstance(event, Member.Added):
                unit = event.unit_id
            elif isinstance(event, Member.Moved):
                if event.effective_at > at:
                    break
                unit = event.unit_id
        if unit is None:
            raise NotFound("member", member_id)
        return unit

    def revise_target(
        self, plan_id: UUID, *, target_id: UUID, committed: Any = None, stretch: Any = None,
        clear_stretch: bool = False, absorb: str | UUID | None = None, spread: Sequence[Spread] = (),
        reason: str | None = None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Revise a target's value and re-spread what hangs on it; a child says where the difference goes
        (``absorb``: "parent" or a sibling's id). Once the plan is published the reason is mandatory."""
        def change(plan: Plan, at: datetime) -> dict[str, Any]:
            plan.revise_target(target_id=target_id, committed=committed, stretch=stretch,
                               clear_stretch=clear_stretch, absorb=absorb, spread=spread, reason=reason,
                               actor=actor, effective_at=at)
            return _affected(plan)

        return self._change(Plan, plan_id, expected_version, change, effective_at, idempotency)

    def remove_target(
        self, plan_id: UUID, *, target_id: UUID, mode: str | None = None, method: str = "proportional",
        residue_to: UUID | None = None, reason: str | None = None, actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Remove a target with its subtree; a child says whether its parent shrinks with it
        (``mode="subtree"``) or its siblings take its value (``mode="respread"``)."""
        def change(plan: Plan, at: datetime) -> dict[str, Any]:
            plan.remove_target(target_id=target_id, mode=mode, method=method, residue_to=residue_to,
                               reason=reason, actor=actor, effective_at=at)
            return _affected(plan)

        return self._change(Plan, plan_id, expected_version, change, effective_at, idempotency)

    def lock_period(
        self, plan_id: UUID, *, period: str, reason: str | None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Lock a period of a plan: its figures are final. Later entries inside it are still accepted."""
        return self._change(
            Plan, plan_id, expected_version,
            lambda p, at: p.lock_period(period=period, reason=reason, actor=actor, effective_at=at),
            effective_at, idempotency,
        )

    def unlock_period(
        self, plan_id: UUID, *, period: str, reason: str | None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Lift a period's lock, with a reason."""
        return self._change(
            Plan, plan_id, expected_version,
            lambda p, at: p.unlock_period(period=period, reason=reason, actor=actor, effective_at=at),
            effective_at, idempotency,
        )

    def publish_plan(
        self, plan_id: UUID, *, note: str = "", actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Freeze the plan's targets as the next version (v1 is the baseline)."""
        def change(plan: Plan, at: datetime) -> dict[str, Any]:
            version = plan.publish(note=v.optional_reason(note, "note"), actor=actor, effective_at=at)
            return {"plan_version": version}

        return self._change(Plan, plan_id, expected_version, change, effective_at, idempotency)

    def close_plan(
        self, plan_id: UUID, *, reason: str = "", actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Plan, plan_id, expected_version,
            lambda p, at: p.close(reason=v.optional_reason(reason), actor=actor, effective_at=at),
            effective_at, idempotency,
        )

    # --- tasks --------------------------------------------------------------------------

    def create_task(
        self, *, title: str, assignee_id: UUID, due: date, plan_id: UUID | None = None,
        target_id: UUID | None = None, actor: str, id: UUID | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Create a task for a member, optionally toward one target of a plan."""
        task_id = id or uuid4()

        def make(at: datetime) -> Task:
            self._check_new(Task, task_id, given=id)
            self.active_member(assignee_id, "assignee_id")
            if target_id is not None and plan_id is None:
                raise RuleViolation("task.target_without_plan", "a task for a target names its plan", "plan_id")
            if plan_id is not None:
                plan = self.get(Plan, plan_id, "plan_id")
                if target_id is not None and target_id not in plan.targets:
                    raise NotFound("target", target_id, "target_id")
            return Task.create(id=task_id, title=title, assignee_id=assignee_id, due=due, plan_id=plan_id,
                               target_id=target_id, actor=actor, effective_at=at)

        return self._create(make, effective_at, idempotency)

    def reassign_task(
        self, task_id: UUID, *, assignee_id: UUID, reason: str | None, actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        def change(task: Task, at: datetime) -> None:
            self.active_member(assignee_id, "assignee_id")
            task.reassign(assignee_id, reason=reason, actor=actor, effective_at=at)

        return self._change(Task, task_id, expected_version, change, effective_at, idempotency)

    def reschedule_task(
        self, task_id: UUID, *, due: date, reason: str | None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Task, task_id, expected_version,
            lambda t, at: t.reschedule(due, reason=reason, actor=actor, effective_at=at), effective_at, idempotency,
        )

    def report_task_progress(
        self, task_id: UUID, *, progress: int, note: str = "", actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Task, task_id, expected_version,
            lambda t, at: t.report_progress(progress, note=note, actor=actor, effective_at=at),
            effective_at, idempotency,
        )

    def complete_task(
        self, task_id: UUID, *, outcome: str = "", actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Task, task_id, expected_version,
            lambda t, at: t.complete(outcome=outcome, actor=actor, effective_at=at), effective_at, idempotency,
        )

    def cancel_task(
        self, task_id: UUID, *, reason: str | None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Task, task_id, expected_version,
            lambda t, at: t.cancel(reason=reason, actor=actor, effective_at=at), effective_at, idempotency,
        )

    # --- deals and activities -----------------------------------------------------------

    def open_deal(
        self, *, name: str, account_id: UUID | None, owner_id: UUID, product_id: UUID, amount: Any,
        currency: str, expected_close: date, stage: str = "lead", actor: str, id: UUID | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Open a deal for an account and product, owned by a member."""
        deal_id = id or uuid4()

        def make(at: datetime) -> Deal:
            self._check_new(Deal, deal_id, given=id)
            self.active_member(owner_id, "owner_id")
            product = self.get(Product, product_id, "product_id")
            account = self.get(Account, account_id, "account_id") if account_id is not None else None
            return Deal.open(
                id=deal_id, name=name, account_id=account_id, owner_id=owner_id, product_id=product_id,
                product_line=product.product_line, region=account.region if account else "",
                segment=account.segment if account else "", amount=amount, currency=currency,
                expected_close=expected_close, stage=stage, actor=actor, effective_at=at,
            )

        return self._create(make, effective_at, idempotency)

    def change_deal_stage(
        self, deal_id: UUID, *, stage: str, reason: str | None = None, actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Deal, deal_id, expected_version,
            lambda d, at: d.change_stage(stage, reason=reason, actor=actor, effective_at=at), effective_at, idempotency,
        )

    def change_deal_amount(
        self, deal_id: UUID, *, amount: Any, reason: str | None = None, actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Deal, deal_id, expected_version,
            lambda d, at: d.change_amount(amount, reason=reason, actor=actor, effective_at=at), effective_at, idempotency,
        )

    def change_deal_expected_close(
        self, deal_id: UUID, *, expected_close: date, reason: str | None = None, actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Deal, deal_id, expected_version,
            lambda d, at: d.change_expected_close(expected_close, reason=reason, actor=actor, effective_at=at),
            effective_at, idempotency,
        )

    def reassign_deal(
        self, deal_id: UUID, *, owner_id: UUID, reason: str | None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        def change(deal: Deal, at: datetime) -> None:
            self.active_member(owner_id, "owner_id")
            deal.reassign(owner_id, reason=reason, actor=actor, effective_at=at)

        return self._change(Deal, deal_id, expected_version, change, effective_at, idempotency)

    def win_deal(
        self, deal_id: UUID, *, amount: Any = None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Deal, deal_id, expected_version,
            lambda d, at: d.win(amount=amount, actor=actor, effective_at=at), effective_at, idempotency,
        )

    def lose_deal(
        self, deal_id: UUID, *, reason: str | None, actor: str, expected_version: int | None = None,
        effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Deal, deal_id, expected_version,
            lambda d, at: d.lose(reason=reason, actor=actor, effective_at=at), effective_at, idempotency,
        )

    def reopen_deal(
        self, deal_id: UUID, *, reason: str | None, stage: str = "negotiation", actor: str,
        expected_version: int | None = None, effective_at: datetime | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        return self._change(
            Deal, deal_id, expected_version,
            lambda d, at: d.reopen(reason=reason, stage=stage, actor=actor, effective_at=at), effective_at, idempotency,
        )

    def log_activity(
        self, *, kind: str, member_id: UUID, deal_id: UUID | None = None, note: str = "", actor: str,
        id: UUID | None = None, effective_at: datetime | None = None, idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Log a call, visit, meeting, demo or email by a member, optionally on a deal."""
        activity_id = id or uuid4()

        def make(at: datetime) -> Activity:
            self._check_new(Activity, activity_id, given=id)
            self.active_member(member_id)
            if deal_id is not None:
                self.get(Deal, deal_id, "deal_id")
            return Activity.log(id=activity_id, kind=kind, member_id=member_id, deal_id=deal_id, note=note,
                                actor=actor, effective_at=at)

        return self._create(make, effective_at, idempotency)

    # --- bulk ---------------------------------------------------------------------------

    def record(self, aggregates: list[SalesAggregate]) -> int:
        """Save many new or changed aggregates in one transaction (imports); returns the last position."""
        with self._transaction():
            recordings = self.save(*aggregates)
        return recordings[-1].notification.id if recordings else 0


def _affected(plan: Plan) -> dict[str, Any]:
    """What a revision or removal answers: every other target it moved."""
    event: Any = plan.pending_events[-1]
    return {"affected_ids": [str(e["target_id"]) for e in event.effects]}

"""Helpers for the HTTP API tests: an app on a fresh database, an organisation, and a token per role.

The organisation every API test starts from:

    ACME (company)
    ├── East (region)       manager Mia;  East Team: reps Ann and Bob
    └── West (region)       manager Wes;  rep Cy

plus a product, an account, and tokens for an admin, a viewer and each member.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from uuid import UUID

import httpx2
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import Services
from api.settings import Settings
from api.tokens import create_token
from domain.application import SalesPlanning

ROLES = ("anon", "viewer", "admin", "manager", "other_manager", "rep", "other_rep")
"""Who calls: ``manager`` manages East (Ann's and Bob's region), ``other_manager`` West; ``rep`` is Ann,
``other_rep`` is Bob (same team, different deals)."""


@dataclass
class World:
    company: UUID
    east: UUID
    east_team: UUID
    west: UUID
    mia: UUID  # East manager
    wes: UUID  # West manager
    ann: UUID  # East Team rep
    bob: UUID  # East Team rep
    cy: UUID  # West rep
    product: UUID
    account: UUID
    tokens: dict[str, str] = field(default_factory=dict)

    def member_of(self, role: str) -> UUID | None:
        return {"manager": self.mia, "other_manager": self.wes, "rep": self.ann, "other_rep": self.bob}.get(role)


class Api:
    """A TestClient with a token per role and direct access to the application underneath."""

    def __init__(self, client: TestClient, world: World) -> None:
        self.client = client
        self.world = world

    @property
    def services(self) -> Services:
        services: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return services

    @property
    def planning(self) -> SalesPlanning:
        return self.services.planning

    def head(self) -> int:
        return self.planning.recorder.max_notification_id() or 0

    def headers(self, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {} if role == "anon" else {"Authorization": f"Bearer {self.world.tokens[role]}"}
        return {**headers, **(extra or {})}

    def request(self, role: str, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None,
                params: dict[str, Any] | None = None) -> httpx2.Response:
        return self.client.request(method, path, json=json, headers=self.headers(role, headers), params=params)

    def get(self, role: str, path: str, **params: Any) -> httpx2.Response:
        return self.request(role, "GET", path, params=params or None)

    def post(self, role: str, path: str, body: Any = None, *, if_match: int | str | None = None,
             key: str | None = None) -> httpx2.Response:
        headers: dict[str, str] = {}
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"' if isinstance(if_match, int) else if_match
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.request(role, "POST", path, json={} if body is None else body, headers=headers)

    def ok(self, role: str, path: str, body: Any = None, *, if_match: int | None = None) -> dict[str, Any]:
        """POST that must succeed; returns the command's answer."""
        response = self.post(role, path, body, if_match=if_match)
        assert response.status_code in (200, 201), (path, response.status_code, response.text)
        data: dict[str, Any] = response.json()
        return data

    def version(self, entity_id: UUID | str) -> int:
        return int(self.planning.repository.get(UUID(str(entity_id))).version)


def build_world(planning: SalesPlanning) -> World:
    """The organisation and catalogue above, written straight through the application."""
    actor = "setup"
    company = planning.add_unit(name="ACME", actor=actor).id
    east = planning.add_unit(name="East", parent_id=company, actor=actor).id
    east_team = planning.add_unit(name="East Team", parent_id=east, actor=actor).id
    west = planning.add_unit(name="West", parent_id=company, actor=actor).id
    mia = planning.add_member(name="Mia", role="manager", unit_id=east, actor=actor).id
    wes = planning.add_member(name="Wes", role="manager", unit_id=west, actor=actor).id
    ann = planning.add_member(name="Ann", role="rep", unit_id=east_team, actor=actor).id
    bob = planning.add_member(name="Bob", role="rep", unit_id=east_team, actor=actor).id
    cy = planning.add_member(name="Cy", role="rep", unit_id=west, actor=actor).id
    product = planning.add_product(name="Widget Pro", product_line="widgets", list_price="1000", currency="EUR",
                                   actor=actor).id
    account = planning.add_account(name="Globex", segment="enterprise", region="east", actor=actor).id
    return World(company, east, east_team, west, mia, wes, ann, bob, cy, product, account)


def issue_tokens(services: Services, world: World) -> None:
    database = services.database
    world.tokens["admin"] = create_token(database, role="admin", label="test admin")[1]
    world.tokens["viewer"] = create_token(database, role="viewer", label="bi")[1]
    for role in ("manager", "other_manager", "rep", "other_rep"):
        member = world.member_of(role)
        world.tokens[role] = create_token(database, member_id=member)[1]


@contextmanager
def running_api(database_url: str, **settings: Any) -> Iterator[Api]:
    """The app on ``database_url`` with its lifespan running (projections inline), and the world built."""
    # The scheduled alert round stays out of the way of tests that evaluate alerts themselves.
    defaults = {"database_url": database_url, "inline_projections": True, "alert_delivery_seconds": 3600.0}
    app = create_app(Settings(**{**defaults, **settings}))
    with TestClient(app) as client:
        services: Services = app.state.services
        world = build_world(services.planning)
        issue_tokens(services, world)
        yield Api(client, world)


@pytest.fixture(name="api")
def api_fixture(database_url: str) -> Iterator[Api]:
    """The running API on a fresh SQLite or PostgreSQL database (import ``api_fixture`` to use ``api``)."""
    with running_api(database_url) as running:
        yield running


# --- small builders used by several suites ------------------------------------------------------


def open_deal(api: Api, owner: UUID, *, amount: str = "1000", stage: str = "lead",
              expected_close: date = date(2026, 6, 30)) -> UUID:
    return api.planning.open_deal(
        name="Globex renewal", account_id=api.world.account, owner_id=owner, product_id=api.world.product,
        amount=amount, currency="EUR", expected_close=expected_close, stage=stage, actor="setup",
    ).id


def create_task(api: Api, assignee: UUID) -> UUID:
    return api.planning.create_task(title="Run 40 demos", assignee_id=assignee, due=date(2026, 6, 30),
                                    actor="setup").id

"""A client generated from /openapi.json runs the manager-and-reps story, as a third party would.

``openapi-python-client`` generates a Python package from the document (any warning fails the
test: a dropped response is a client that cannot read it), and the story runs through it over
real HTTP against the app served by uvicorn on a free port: the admin sets up the organisation
and the catalogue, Mia (East's manager) drafts the 2026 plan with a Q2 revenue target of
100,000 and publishes it, Ann wins a 30,000 deal on 20 April, and Mia reads where Q2 stands.
A stale ETag comes back as a typed 412 problem, a revision without a reason as a typed 422.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
import uvicorn

from api.app import create_app
from api.deps import Services
from api.settings import Settings
from api.tokens import create_token

PACKAGE = "salesplan_client"
CONFIG = f"""\
package_name_override: {PACKAGE}
post_hooks: []
content_type_overrides:
  image/svg+xml: text/plain
"""
"""The generator does not know SVG; read as text it is an XML string (the one override a client needs)."""


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    where = tmp_path_factory.mktemp("client")
    (where / "openapi.json").write_text(json.dumps(create_app(Settings(database_url="sqlite://")).openapi()))
    (where / "config.yaml").write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", "openapi.json", "--config",
         "config.yaml", "--meta", "none", "--output-path", PACKAGE],
        cwd=where, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


class Served:
    """The app under uvicorn on 127.0.0.1 and a port the OS chose."""

    def __init__(self, database_url: str) -> None:
        self.app = create_app(Settings(database_url=database_url, inline_projections=True))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"2026-{day}T10:00:00+02:00")


def test_the_manager_and_reps_story_through_a_generated_client(client_package: ModuleType, database_url: str
                                                               ) -> None:
    c = client_package
    m: Any = importlib.import_module(f"{PACKAGE}.models")

    def op(group: str, name: str) -> Any:
        """The generated module of one operation: api/<tag>/<operation id>.py."""
        return importlib.import_module(f"{PACKAGE}.api.{group}.{name}")

    with Served(database_url) as served:
        database = served.services.database
        admin = c.AuthenticatedClient(base_url=served.url, token=create_token(database, role="admin", label="it")[1])

        def created(response: Any) -> Any:
            assert response.status_code == 201, response.content
            assert response.headers["etag"] == f'"{response.parsed.version}"'
            assert response.headers["location"].endswith(str(response.parsed.id))
            return response.parsed

        # --- the admin sets up the organisation and the catalogue ---------------------------------
        acme = created(op("organisation", "add_unit").sync_detailed(
            client=admin, body=m.AddUnit(name="ACME", effective_at=at("03-01"))))
        east = created(op("organisation", "add_unit").sync_detailed(
            client=admin, body=m.AddUnit(name="East", parent_id=acme.id, effective_at=at("03-01"))))
        mia = created(op("organisation", "add_member").sync_detailed(client=admin, body=m.AddMember(
            name="Mia", role=m.AddMemberRole.MANAGER, unit_id=east.id, effective_at=at("03-01"))))
        ann = created(op("organisation", "add_member").sync_detailed(client=admin, body=m.AddMember(
            name="Ann", role=m.AddMemberRole.REP, unit_id=east.id, effective_at=at("03-01"))))
        widget = created(op("catalogue", "add_product").sync_detailed(client=admin, body=m.AddProduct(
            name="Widget Pro", product_line="widgets", list_price="1000", currency="EUR", effective_at=at("03-01"))))
        globex = created(op("catalogue", "add_account").sync_detailed(client=admin, body=m.AddAccount(
            name="Globex", segment="enterprise", region="east", effective_at=at("03-01"))))
        manager = c.AuthenticatedClient(base_url=served.url, token=create_token(database, member_id=mia.id)[1])
        rep = c.AuthenticatedClient(base_url=served.url, token=create_token(database, member_id=ann.id)[1])

        # --- Mia plans Q2 and publishes the baseline ------------------------------------------------
        plan = created(op("plans", "draft_plan").sync_detailed(client=manager, body=m.DraftPlan(
            name="East 2026", span="2026", currency="EUR", unit_id=east.id, effective_at=at("03-20"))))
        target = op("plans", "set_target").sync_detailed(plan.id, client=manager, if_match=f'"{plan.version}"',
                                                         body=m.SetTarget(
            metric=m.SetTargetMetric.REVENUE, period="2026-Q2", scope=m.ScopeIn(unit_id=east.id),
            committed="100000", effective_at=at("03-20")))
        assert target.status_code == 200 and target.headers["etag"] == f'"{target.parsed.version}"'
        publish = op("plans", "publish_plan")
        v1 = publish.sync_detailed(plan.id, client=manager, if_match=target.headers["etag"],
                                   body=m.PublishPlan(note="Q2 baseline", effective_at=at("03-25")))
        assert (v1.status_code, v1.parsed.plan_version) == (200, 1)

        stale = publish.sync_detailed(plan.id, client=manager, if_match=target.headers["etag"],
                                      body=m.PublishPlan(note="again"))
        assert stale.status_code == 412 and isinstance(stale.parsed, m.Problem)
        assert (stale.parsed.rule, stale.parsed["current_version"]) == ("concurrency.version_conflict", v1.parsed.version)
        assert stale.headers["etag"] == f'"{v1.parsed.version}"'
        unreasoned = op("plans", "revise_target").sync_detailed(
            plan.id, client=manager, if_match=v1.headers["etag"],
            body=m.ReviseTarget(target_id=target.parsed.target_id, committed="90000"))
        assert unreasoned.status_code == 422 and isinstance(unreasoned.parsed, m.Problem)
        assert (unreasoned.parsed.rule, unreasoned.parsed.pointer) == ("reason.required", "/reason")

        # --- Ann works her deal and wins it -----------------------------------------------------------
        deal = created(op("deals", "open_deal").sync_detailed(client=rep, body=m.OpenDeal(
            name="Globex platform", account_id=globex.id, owner_id=ann.id, product_id=widget.id, amount="30000",
            currency="EUR", expected_close=date(2026, 5, 15), effective_at=at("04-02"))))
        moved = op("deals", "change_deal_stage").sync_detailed(
            deal.id, client=rep, if_match=f'"{deal.version}"',
            body=m.ChangeDealStage(stage=m.ChangeDealStageStage.QUALIFIED, effective_at=at("04-06")))
        won = op("deals", "win_deal").sync_detailed(deal.id, client=rep, if_match=moved.headers["etag"],
                                                    body=m.WinDeal(effective_at=at("04-20")))
        assert won.status_code == 200

        # --- Mia reads where Q2 stands (the quarter is over: expected to date is the whole target) ----------
        progress = op("reads", "get_progress").sync_detailed(client=manager, plan_id=plan.id,
                                                             wait_for_position=won.parsed.position)
        assert progress.status_code == 200 and isinstance(progress.parsed, m.ProgressReport)
        assert progress.headers["salesplan-position"] == str(progress.parsed.position)
        (row,) = progress.parsed.rows
        now = datetime.now(UTC)
        assert now > datetime(2026, 7, 1, tzinfo=UTC), "the story's quarter must be over for these figures"
        assert (Decimal(row.committed), Decimal(row.actual), Decimal(row.gap)) == (100000, 30000, 70000)
        assert Decimal(row.attainment) == Decimal("0.3")  # 30,000 / 100,000
        assert Decimal(row.expected_to_date) == 100000

        # --- the collections a front end fills its pickers with -----------------------------------------
        list_units = op("collections", "list_units")
        first = list_units.sync(client=rep, limit=1)
        rest = list_units.sync(client=rep, limit=1, cursor=first.next_cursor)
        assert [u.name for u in first.rows + rest.rows] == ["ACME", "East"] and rest.next_cursor is None
        assert rest.rows[0].parent_name == "ACME"
        targets = op("collections", "list_plan_targets").sync(plan.id, client=rep)
        (tree_row,) = targets.rows
        assert [(v.version, Decimal(v.committed)) for v in tree_row.versions] == [(1, Decimal(100000))]
        assert tree_row.unit_name == "East"
        products = op("collections", "list_products").sync(client=rep, wait_for_position=won.parsed.position)
        assert [p.name for p in products.rows] == ["Widget Pro"]

        # --- the change feed, typed per event -------------------------------------------------------------
        feed = op("events", "list_events").sync(client=admin, limit=1000)
        wins = [e for e in feed.events if isinstance(e, m.DealWonEvent)]
        assert len(wins) == 1 and wins[0].data.amount == "30000" and wins[0].data.owner_id == ann.id
        assert {type(e).__name__ for e in feed.events} >= {"UnitAddedEvent", "PlanPublishedEvent", "DealOpenedEvent"}

        # --- the week's report as CSV, a text body the client hands over as it is -----------------------------
        csv = op("analytics", "get_unit_report_csv").sync(east.id, "2026-W17", client=manager)
        assert isinstance(csv, str) and csv.splitlines()[0] == "section,item,measure,currency,value"

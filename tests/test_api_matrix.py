"""The role × route matrix: every route the app serves, called by every role, answers as the table says.

The table is checked against ``app.routes``: a route without an entry (or an entry without a
route) fails the suite, so a new route cannot ship without deciding who may call it. Every
refusal is also checked to have written nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi.routing import iter_route_contexts

from tests.api_helpers import ROLES, Api, api_fixture, create_task, open_deal  # noqa: F401 — the `api` fixture

# --- who may: the expected status per role ------------------------------------------------------


def outcome(default: int, anon: int = 401, **roles: int) -> dict[str, int]:
    return {role: roles.get(role, anon if role == "anon" else default) for role in ROLES}


PUBLIC = outcome(200, anon=200)
READ = outcome(200)
REPORTING = outcome(403, admin=200, viewer=200)
EAST_CREATE = outcome(403, admin=201, manager=201)
EAST_CHANGE = outcome(403, admin=200, manager=200)
ADMIN_CREATE = outcome(403, admin=201)
ADMIN_CHANGE = outcome(403, admin=200)
MANAGERS_CREATE = outcome(403, admin=201, manager=201, other_manager=201)
MANAGERS_CHANGE = outcome(403, admin=200, manager=200, other_manager=200)
OWN_CREATE = outcome(403, admin=201, manager=201, rep=201)
OWN_READ = outcome(200, other_rep=404)
OWN_CHANGE = outcome(403, admin=200, manager=200, rep=200, other_rep=404)
REASSIGN = outcome(403, admin=200, manager=200, other_rep=404)
EAST_READ = outcome(200, other_manager=403, rep=403, other_rep=403)  # about East: its manager, admins, viewers
NOT_REP_READ = outcome(200, rep=403, other_rep=403)
ADMIN_READ = outcome(403, admin=200)
NO_EVENTS = frozenset({"POST /alerts/evaluate", "POST /alerts/{alert_id}/acknowledge", "POST /alert-webhooks"})
"""Commands on the alert tables, not on the event log: they succeed without appending."""


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    if_match: int | None = None


Prepare = Callable[[Api], Call]


# --- fresh entities for each call (the allowed roles change them) --------------------------------


def _unit(api: Api) -> str:
    return str(api.planning.add_unit(name="Pop-up", parent_id=api.world.east_team, actor="setup").id)


def _member(api: Api) -> str:
    return str(api.planning.add_member(name="Dee", role="rep", unit_id=api.world.east_team, actor="setup").id)


def _plan(api: Api, *, target: bool = False) -> tuple[str, str | None]:
    plan = api.planning.draft_plan(name="East 2026", span="2026", currency="EUR", unit_id=api.world.east,
                                   actor="setup").id
    if not target:
        return str(plan), None
    from domain.values import Scope

    result = api.planning.set_target(plan, metric="revenue", period="2026", scope=Scope(unit_id=api.world.east),
                                     committed="120000", actor="setup")
    return str(plan), str(result.details["target_id"])


def _locked(api: Api) -> str:
    plan, _ = _plan(api)
    api.planning.lock_period(UUID(plan), period="2026-01", reason="January closed", actor="setup")
    return plan


def _published(api: Api) -> str:
    plan, _ = _plan(api, target=True)
    api.planning.publish_plan(UUID(plan), note="baseline", actor="setup")
    return plan


def _month_target(api: Api) -> str:
    """A revenue target for East in June 2026 (a short burn-up), projected."""
    from domain.values import Scope

    plan, _ = _plan(api)
    result = api.planning.set_target(UUID(plan), metric="revenue", period="2026-06", scope=Scope(unit_id=api.world.east),
                                     committed="10000", actor="setup")
    api.services.wait_for(api.head())
    return str(result.details["target_id"])


def _alert(api: Api) -> str:
    """An overdue task of Ann's (East Team), evaluated into an open alert."""
    from projections.processes import alerts

    task = create_task(api, api.world.ann)
    api.services.wait_for(api.head())
    alerts.raise_alerts(api.services.database, at=datetime.now(UTC))
    return str(alerts.alert_id("task_overdue", "task", task, "2026-06-30"))


def _webhook(api: Api) -> str:
    from projections.processes import webhooks

    return str(webhooks.add_webhook(api.services.database, url="https://example.com/hooks", secret="s" * 20).id)


def _deal(api: Api, stage: str = "lead") -> str:
    deal = open_deal(api, api.world.ann)
    if stage == "lost":
        api.planning.lose_deal(deal, reason="budget cut", actor="setup")
    return str(deal)


def change(path: str, make: Callable[[Api], str], body: Any) -> Prepare:
    def prepare(api: Api) -> Call:
        entity = make(api)
        return Call("POST", path.format(entity), body, api.version(entity))

    return prepare


def plan_change(path: str, body: Callable[[str | None], Any], target: bool = True) -> Prepare:
    def prepare(api: Api) -> Call:
        plan, target_id = _plan(api, target=target)
        return Call("POST", path.format(plan), body(target_id), api.version(plan))

    return prepare


def get(path: str, make: Callable[[Api], Any] | None = None) -> Prepare:
    return lambda api: Call("GET", path.format(make(api)) if make else path)


def post(path: str, body: Callable[[Api], Any]) -> Prepare:
    return lambda api: Call("POST", path, body(api))


MATRIX: dict[str, tuple[Prepare, dict[str, int]]] = {
    # organisation
    "POST /units": (post("/units", lambda a: {"name": "Pop-up", "parent_id": str(a.world.east_team)}), EAST_CREATE),
    "GET /units/{unit_id}": (get("/units/{}", lambda a: a.world.east_team), READ),
    "POST /units/{unit_id}/rename": (change("/units/{}/rename", _unit, {"name": "Pop-up East"}), EAST_CHANGE),
    "POST /units/{unit_id}/move": (
        lambda a: change("/units/{}/move", _unit, {"parent_id": str(a.world.east), "reason": "re-org"})(a), EAST_CHANGE),
    "POST /units/{unit_id}/deactivate": (change("/units/{}/deactivate", _unit, {"reason": "closed"}), EAST_CHANGE),
    "POST /members": (
        post("/members", lambda a: {"name": "Dee", "role": "rep", "unit_id": str(a.world.east_team)}), EAST_CREATE),
    "GET /members/{member_id}": (get("/members/{}", lambda a: a.world.ann), READ),
    "POST /members/{member_id}/rename": (change("/members/{}/rename", _member, {"name": "Dee Dee"}), EAST_CHANGE),
    "POST /members/{member_id}/move": (
        lambda a: change("/members/{}/move", _member, {"unit_id": str(a.world.east), "reason": "promoted"})(a),
        EAST_CHANGE),
    "POST /members/{member_id}/deactivate": (change("/members/{}/deactivate", _member, {"reason": "left"}), EAST_CHANGE),
    # catalogue
    "POST /products": (post("/products", lambda a: {"name": "Gadget", "product_line": "gadgets", "list_price": "99.90",
                                                   "currency": "EUR"}), ADMIN_CREATE),
    "GET /products/{product_id}": (get("/products/{}", lambda a: a.world.product), READ),
    "POST /products/{product_id}/list-price": (
        lambda a: Call("POST", f"/products/{a.world.product}/list-price",
                       {"list_price": str(1000 + a.version(a.world.product))}, a.version(a.world.product)),
        ADMIN_CHANGE),
    "POST /accounts": (post("/accounts", lambda a: {"name": "Initech", "segment": "smb", "region": "east"}),
                       MANAGERS_CREATE),
    "GET /accounts/{account_id}": (get("/accounts/{}", lambda a: a.world.account), READ),
    "POST /accounts/{account_id}/reclassify": (
        lambda a: Call("POST", f"/accounts/{a.world.account}/reclassify",
                       {"segment": f"tier-{a.version(a.world.account)}", "region": "east"}, a.version(a.world.account)),
        MANAGERS_CHANGE),
    # plans
    "POST /plans": (post("/plans", lambda a: {"name": "East 2026", "span": "2026", "currency": "EUR",
                                             "unit_id": str(a.world.east)}), EAST_CREATE),
    "GET /plans/{plan_id}": (get("/plans/{}", lambda a: _plan(a)[0]), READ),
    "POST /plans/{plan_id}/targets": (
        lambda a: plan_change("/plans/{}/targets", lambda _t: {
            "metric": "revenue", "period": "2026-Q2", "scope": {"unit_id": str(a.world.east)}, "committed": "30000"},
            target=False)(a),
        EAST_CHANGE),
    "POST /plans/{plan_id}/decompose": (
        plan_change("/plans/{}/decompose", lambda t: {"parent_id": t, "by": "period",
                                                      "parts": ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"]}),
        EAST_CHANGE),
    "POST /plans/{plan_id}/revise": (
        plan_change("/plans/{}/revise", lambda t: {"target_id": t, "committed": "130000"}), EAST_CHANGE),
    "POST /plans/{plan_id}/remove-target": (
        plan_change("/plans/{}/remove-target", lambda t: {"target_id": t}), EAST_CHANGE),
    "POST /plans/{plan_id}/lock-period": (
        plan_change("/plans/{}/lock-period", lambda t: {"period": "2026-01", "reason": "January closed"}, target=False),
        EAST_CHANGE),
    "POST /plans/{plan_id}/unlock-period": (
        lambda a: (lambda p: Call("POST", f"/plans/{p}/unlock-period", {"period": "2026-01", "reason": "reopened"},
                                  a.version(p)))(_locked(a)),
        EAST_CHANGE),
    "POST /plans/{plan_id}/publish": (plan_change("/plans/{}/publish", lambda t: {"note": "baseline"}), EAST_CHANGE),
    "POST /plans/{plan_id}/close": (plan_change("/plans/{}/close", lambda t: {"reason": "year over"}), EAST_CHANGE),
    # tasks
    "POST /tasks": (post("/tasks", lambda a: {"title": "Call Globex", "assignee_id": str(a.world.ann),
                                             "due": "2026-06-30"}), OWN_CREATE),
    "GET /tasks/{task_id}": (get("/tasks/{}", lambda a: create_task(a, a.world.ann)), OWN_READ),
    "POST /tasks/{task_id}/reassign": (
        lambda a: change("/tasks/{}/reassign", lambda b: str(create_task(b, b.world.ann)),
                         {"assignee_id": str(a.world.bob), "reason": "Ann is on leave"})(a), REASSIGN),
    "POST /tasks/{task_id}/reschedule": (
        change("/tasks/{}/reschedule", lambda a: str(create_task(a, a.world.ann)),
               {"due": "2026-07-15", "reason": "customer asked"}), OWN_CHANGE),
    "POST /tasks/{task_id}/progress": (
        change("/tasks/{}/progress", lambda a: str(create_task(a, a.world.ann)), {"progress": 50}), OWN_CHANGE),
    "POST /tasks/{task_id}/complete": (
        change("/tasks/{}/complete", lambda a: str(create_task(a, a.world.ann)), {"outcome": "40 demos run"}),
        OWN_CHANGE),
    "POST /tasks/{task_id}/cancel": (
        change("/tasks/{}/cancel", lambda a: str(create_task(a, a.world.ann)), {"reason": "no longer needed"}),
        OWN_CHANGE),
    # deals and activities
    "POST /deals": (post("/deals", lambda a: {
        "name": "Globex expansion", "account_id": str(a.world.account), "owner_id": str(a.world.ann),
        "product_id": str(a.world.product), "amount": "2500.00", "currency": "EUR", "expected_close": "2026-06-30",
    }), OWN_CREATE),
    "GET /deals/{deal_id}": (get("/deals/{}", _deal), OWN_READ),
    "POST /deals/{deal_id}/stage": (change("/deals/{}/stage", _deal, {"stage": "qualified"}), OWN_CHANGE),
    "POST /deals/{deal_id}/amount": (change("/deals/{}/amount", _deal, {"amount": "1500"}), OWN_CHANGE),
    "POST /deals/{deal_id}/expected-close": (
        change("/deals/{}/expected-close", _deal, {"expected_close": "2026-07-31", "reason": "slipped"}), OWN_CHANGE),
    "POST /deals/{deal_id}/reassign": (
        lambda a: change("/deals/{}/reassign", _deal, {"owner_id": str(a.world.bob), "reason": "Ann on leave"})(a),
        REASSIGN),
    "POST /deals/{deal_id}/win": (change("/deals/{}/win", _deal, {}), OWN_CHANGE),
    "POST /deals/{deal_id}/lose": (change("/deals/{}/lose", _deal, {"reason": "lost on price"}), OWN_CHANGE),
    "POST /deals/{deal_id}/reopen": (
        change("/deals/{}/reopen", lambda a: _deal(a, "lost"), {"reason": "budget came back"}), OWN_CHANGE),
    "POST /activities": (post("/activities", lambda a: {"kind": "call", "member_id": str(a.world.ann),
                                                       "deal_id": _deal(a)}), OWN_CREATE),
    "GET /activities/{activity_id}": (
        get("/activities/{}", lambda a: a.planning.log_activity(kind="demo", member_id=a.world.ann, actor="setup").id),
        OWN_READ),
    # reads of the projections (a published plan and a worked deal, waited for)
    "GET /progress": (get("/progress"), READ),
    "GET /units": (get("/units"), READ),
    "GET /units/tree": (get("/units/tree?members=true"), READ),
    "GET /members": (get("/members"), READ),
    "GET /products": (get("/products"), READ),
    "GET /accounts": (get("/accounts"), READ),
    "GET /plans": (get("/plans"), READ),
    "GET /plans/{plan_id}/targets": (lambda a: Call("GET", f"/plans/{_published(a)}/targets?wait_for_position={a.head()}"),
                                     READ),
    "GET /activities": (get("/activities"), READ),  # a rep's own only
    "GET /audit": (get("/audit"), outcome(200, rep=403, other_rep=403)),
    "GET /plans/{plan_id}/versions": (lambda a: Call("GET", f"/plans/{_published(a)}/versions"), READ),
    "GET /plans/{plan_id}/versions/{version}": (
        lambda a: Call("GET", f"/plans/{_published(a)}/versions/1?wait_for_position={a.head()}"), READ),
    "GET /plans/{plan_id}/comparison": (
        lambda a: Call("GET", f"/plans/{_published(a)}/comparison?from_version=0&to_version=1"
                              f"&wait_for_position={a.head()}"), READ),
    "GET /plans/{plan_id}/versions/{version}/actuals": (
        lambda a: Call("GET", f"/plans/{_published(a)}/versions/1/actuals?wait_for_position={a.head()}"), READ),
    "GET /pipeline": (get("/pipeline"), READ),
    "GET /pipeline/summary": (get("/pipeline/summary"), READ),
    "GET /pipeline/deals/{deal_id}": (
        lambda a: Call("GET", f"/pipeline/deals/{_deal(a)}?wait_for_position={a.head()}"), OWN_READ),
    "GET /tasks": (get("/tasks"), READ),
    "GET /tasks/summary": (get("/tasks/summary"), READ),
    "GET /projections": (get("/projections"), READ),
    "GET /me": (get("/me"), READ),
    "GET /events": (get("/events"), REPORTING),
    # retrospectives and analytics (a rep's plan-wide replay is their unit's)
    "GET /plans/{plan_id}/replay": (
        lambda a: Call("GET", f"/plans/{_published(a)}/replay?step=week&wait_for_position={a.head()}"),
        outcome(200, other_manager=403)),
    "GET /plans/{plan_id}/baseline": (
        lambda a: Call("GET", f"/plans/{_published(a)}/baseline?wait_for_position={a.head()}"), EAST_READ),
    "GET /plans/{plan_id}/attribution": (
        lambda a: Call("GET", f"/plans/{_published(a)}/attribution?from_version=1&to=2026-11-01"
                              f"&wait_for_position={a.head()}"), EAST_READ),
    "GET /plans/{plan_id}/revision-reasons": (
        lambda a: Call("GET", f"/plans/{_published(a)}/revision-reasons?wait_for_position={a.head()}"), EAST_READ),
    "GET /analytics/funnel": (get("/analytics/funnel?span_start=2026-01-01T00:00:00Z&span_end=2026-04-01T00:00:00Z"),
                              READ),
    "GET /alerts": (get("/alerts"), READ),
    "GET /alerts/preview": (get("/alerts/preview"), NOT_REP_READ),
    "POST /alerts/evaluate": (post("/alerts/evaluate", lambda a: None), ADMIN_CHANGE),
    "GET /alerts/{alert_id}": (get("/alerts/{}", _alert), outcome(200, other_manager=403, other_rep=404)),
    "POST /alerts/{alert_id}/acknowledge": (
        lambda a: Call("POST", f"/alerts/{_alert(a)}/acknowledge"), outcome(403, admin=200, rep=200, other_rep=404)),
    "POST /alert-webhooks": (
        post("/alert-webhooks", lambda a: {"url": "https://example.com/hooks", "secret": "s" * 20}), ADMIN_CREATE),
    "GET /alert-webhooks": (get("/alert-webhooks"), ADMIN_READ),
    "PATCH /alert-webhooks/{webhook_id}": (
        lambda a: Call("PATCH", f"/alert-webhooks/{_webhook(a)}", {"active": False}), ADMIN_CHANGE),
    "GET /alert-deliveries": (get("/alert-deliveries"), ADMIN_READ),
    "GET /reports/members/{member_id}/{period}": (
        lambda a: Call("GET", f"/reports/members/{a.world.ann}/{datetime.now(UTC):%Y-%m-%d}?format=csv"),
        outcome(200, other_manager=403, other_rep=403)),
    "GET /reports/members/{member_id}/{period}.csv": (
        lambda a: Call("GET", f"/reports/members/{a.world.ann}/{datetime.now(UTC):%Y-%m-%d}.csv"),
        outcome(200, other_manager=403, other_rep=403)),
    "GET /reports/units/{unit_id}/{period}.csv": (
        lambda a: Call("GET", f"/reports/units/{a.world.east_team}/{datetime.now(UTC):%G-W%V}.csv"),
        outcome(200, other_manager=403)),
    "GET /reports/units/{unit_id}/{period}": (
        lambda a: Call("GET", f"/reports/units/{a.world.east_team}/{datetime.now(UTC):%G-W%V}"),
        outcome(200, other_manager=403)),
    "GET /targets/{target_id}/burnup": (get("/targets/{}/burnup", _month_target), EAST_READ),
    "GET /targets/{target_id}/burnup.svg": (get("/targets/{}/burnup.svg", _month_target), EAST_READ),
    # operations and documentation
    "GET /healthz": (get("/healthz"), PUBLIC),
    "GET /readyz": (get("/readyz"), PUBLIC),
    "GET /metrics": (get("/metrics"), REPORTING),
    "GET /openapi.json": (get("/openapi.json"), PUBLIC),
    "GET /docs": (get("/docs"), PUBLIC),
    "GET /docs/oauth2-redirect": (get("/docs/oauth2-redirect"), PUBLIC),
    "GET /redoc": (get("/redoc"), PUBLIC),
}


def served_routes(api: Api) -> set[str]:
    """Every (method, path) the app answers, including routes of included routers."""
    keys: set[str] = set()
    for context in iter_route_contexts(api.client.app.routes):  # type: ignore[attr-defined]
        methods: set[str] = getattr(context.original_route, "methods", None) or set()
        assert context.path is not None
        keys.update(f"{method} {context.path}" for method in methods - {"HEAD"})
    return keys


def test_every_route_has_a_rule_for_every_role(api: Api) -> None:
    served = served_routes(api)
    assert served - MATRIX.keys() == set(), "routes without an entry in the role × route matrix"
    assert MATRIX.keys() - served == set(), "matrix entries for routes the app does not serve"
    assert all(set(expected) == set(ROLES) for _, expected in MATRIX.values())


def test_role_route_matrix(api: Api) -> None:
    """Each route × role answers as the table says; a refusal writes nothing, a command appends."""
    failures = []
    for key, (prepare, expected) in MATRIX.items():
        for role in ROLES:
            call = prepare(api)
            before = api.head()
            headers = {"If-Match": f'"{call.if_match}"'} if call.if_match is not None else {}
            response = api.request(role, call.method, call.path,
                                   json=call.body if call.method in ("POST", "PATCH") else None, headers=headers)
            after = api.head()
            if response.status_code != expected[role]:
                failures.append(f"{key} as {role}: {response.status_code}, expected {expected[role]}: "
                                f"{response.text[:300]}")
            elif response.status_code >= 400:
                if after != before:
                    failures.append(f"{key} as {role}: refused with {response.status_code} but wrote events")
                if key not in {"GET /docs", "GET /redoc"}:
                    assert response.headers["content-type"] == "application/problem+json", (key, role)
            elif call.method == "POST" and after <= before and key not in NO_EVENTS:
                failures.append(f"{key} as {role}: succeeded but appended nothing")
    assert not failures, "\n".join(failures)


def test_a_rep_reads_only_their_own_units_progress(api: Api) -> None:
    west = api.get("rep", "/progress", unit_id=str(api.world.west))
    assert west.status_code == 403
    assert west.json()["rule"] == "auth.outside_your_unit"
    own = api.get("rep", "/progress", unit_id=str(api.world.east_team))
    assert own.status_code == 200


def test_a_manager_plans_only_for_their_own_units_and_people(api: Api) -> None:
    w = api.world
    plan = api.ok("manager", "/plans", {"name": "East 2026", "span": "2026", "currency": "EUR", "unit_id": str(w.east)})
    before = api.head()
    for scope in ({"unit_id": str(w.west)}, {"member_id": str(w.cy)}):
        response = api.post("manager", f"/plans/{plan['id']}/targets", {
            "metric": "revenue", "period": "2026", "scope": scope, "committed": "100"}, if_match=plan["version"])
        assert (response.status_code, response.json()["rule"]) == (403, "auth.outside_your_units"), response.text
    target = api.ok("manager", f"/plans/{plan['id']}/targets", {
        "metric": "revenue", "period": "2026", "scope": {"unit_id": str(w.east)}, "committed": "100"},
        if_match=plan["version"])
    split = api.post("manager", f"/plans/{plan['id']}/decompose", {
        "parent_id": target["target_id"], "by": "member", "parts": [str(w.ann), str(w.cy)]}, if_match=target["version"])
    assert (split.status_code, split.json()["rule"]) == (403, "auth.outside_your_units")
    assert api.head() == before + 1

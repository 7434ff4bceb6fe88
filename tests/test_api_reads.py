"""Reads over HTTP: the change feed, read-your-writes, "as known at", lists, health and metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa

from projections.engine import tracking_table
from tests.api_helpers import Api, api_fixture, create_task, open_deal  # noqa: F401 — the `api` fixture


def test_the_change_feed_pages_through_the_log_in_order(api: Api) -> None:
    deal = open_deal(api, api.world.ann, amount="1234.50")
    api.planning.win_deal(deal, actor="setup")
    head = api.head()
    seen = []
    cursor = None
    while True:
        page = api.get("viewer", "/events", limit=4, **({"cursor": cursor} if cursor else {})).json()
        assert page["head"] == head
        seen += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["position"] for e in seen] == list(range(1, head + 1))
    # A feed's checkpoint: the position of the last event it handled.
    tail = api.get("viewer", "/events", after=head - 2).json()
    assert [e["position"] for e in tail["events"]] == [head - 1, head] and tail["next_cursor"] is None
    opened = next(e for e in seen if e["type"] == "Deal.Opened")
    assert opened["entity"] == "deal" and opened["entity_id"] == str(deal) and opened["version"] == 1
    assert opened["actor"] == "setup"
    assert opened["data"]["amount"] == "1234.50"  # money as a decimal string, never a float
    assert opened["data"]["expected_close"] == "2026-06-30"
    for stamp in ("effective_at", "recorded_at"):
        assert datetime.fromisoformat(opened[stamp]).utcoffset() is not None
    assert "originator_id" not in opened["data"] and "timestamp" not in opened["data"]
    assert {e["entity"] for e in seen} >= {"unit", "member", "product", "account", "deal"}


def test_a_command_position_lets_a_reader_see_its_own_write(api: Api) -> None:
    plan = api.ok("manager", "/plans", {"name": "East 2026", "span": "2026", "currency": "EUR",
                                        "unit_id": str(api.world.east)})
    target = api.ok("manager", f"/plans/{plan['id']}/targets", {
        "metric": "deals_won", "period": "2026-Q3", "scope": {"member_id": str(api.world.ann)}, "committed": "12"},
        if_match=plan["version"])
    rows = api.get("manager", "/progress", plan_id=plan["id"], wait_for_position=target["position"]).json()["rows"]
    assert [(r["target_id"], Decimal(r["committed"])) for r in rows] == [(target["target_id"], Decimal(12))]
    assert api.get("manager", "/projections", wait_for_position=target["position"]).status_code == 200


def test_known_at_answers_as_the_system_knew_it_then(api: Api) -> None:
    plan = api.ok("manager", "/plans", {"name": "East 2026", "span": "2026", "currency": "EUR",
                                        "unit_id": str(api.world.east)})
    first = api.ok("manager", f"/plans/{plan['id']}/targets", {
        "metric": "revenue", "period": "2026-Q3", "scope": {"unit_id": str(api.world.east)}, "committed": "1000"},
        if_match=plan["version"])
    api.services.wait_for(first["position"])
    between = datetime.now(UTC)
    second = api.ok("manager", f"/plans/{plan['id']}/targets", {
        "metric": "revenue", "period": "2026-Q4", "scope": {"unit_id": str(api.world.east)}, "committed": "2000"},
        if_match=first["version"])
    then = api.get("manager", "/progress", plan_id=plan["id"], known_at=between.isoformat(),
                   wait_for_position=second["position"]).json()
    assert [r["period"] for r in then["rows"]] == ["2026-Q3"]
    assert then["position"] == first["position"]
    now = api.get("manager", "/progress", plan_id=plan["id"], wait_for_position=second["position"]).json()
    assert [r["period"] for r in now["rows"]] == ["2026-Q3", "2026-Q4"]


def test_lists_of_deals_and_tasks_page_and_keep_reps_to_their_own(api: Api) -> None:
    deals = [open_deal(api, api.world.ann) for _ in range(3)] + [open_deal(api, api.world.bob)]
    for _ in range(2):
        create_task(api, api.world.ann)
    create_task(api, api.world.cy)
    head = api.head()
    first = api.get("manager", "/pipeline", limit=3, wait_for_position=head).json()
    assert len(first["deals"]) == 3 and first["next_cursor"]
    rest = api.get("manager", "/pipeline", limit=3, cursor=first["next_cursor"]).json()
    assert {d["deal_id"] for d in first["deals"] + rest["deals"]} == {str(d) for d in deals}
    assert rest["next_cursor"] is None
    assert {d["owner_id"] for d in api.get("rep", "/pipeline").json()["deals"]} == {str(api.world.ann)}
    assert api.get("rep", "/pipeline", owner_id=str(api.world.bob)).status_code == 403
    ann_tasks = api.get("rep", "/tasks").json()
    assert len(ann_tasks["tasks"]) == 2 and ann_tasks["next_cursor"] is None
    all_tasks = api.get("admin", "/tasks", limit=2).json()
    assert len(all_tasks["tasks"]) == 2 and all_tasks["next_cursor"]
    last = api.get("admin", "/tasks", limit=2, cursor=all_tasks["next_cursor"]).json()
    assert len(last["tasks"]) == 1 and last["next_cursor"] is None
    assert len({t["task_id"] for t in all_tasks["tasks"] + last["tasks"]}) == 3
    east = api.get("manager", "/tasks/summary", unit_id=str(api.world.east)).json()["members"]
    assert [(m["name"], m["open"]) for m in east] == [("Ann", 2)]
    assert api.get("rep", "/tasks/summary", unit_id=str(api.world.west)).status_code == 403


def test_health_readiness_and_a_stopped_projection(api: Api) -> None:
    assert api.get("anon", "/healthz").json() == {"status": "ok"}
    ready = api.get("anon", "/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert {p["name"] for p in ready.json()["projections"]} >= {"progress", "audit", "pipeline", "plan_version"}
    with api.services.database.engine.begin() as conn:
        conn.execute(sa.update(tracking_table).where(tracking_table.c.name == "audit").values(
            status="failed", error="ValueError: poison", error_position=3))
    stopped = api.get("anon", "/readyz")
    assert stopped.status_code == 503
    assert stopped.json()["status"] == "degraded"
    audit = next(p for p in stopped.json()["projections"] if p["name"] == "audit")
    assert (audit["error"], audit["error_position"]) == ("ValueError: poison", 3)
    assert 'salesplan_projection_failed{projection="audit"} 1' in api.get("admin", "/metrics").text


def test_metrics_count_requests_events_and_projection_lag(api: Api) -> None:
    api.ok("admin", "/units", {"name": "Pop-up", "parent_id": str(api.world.east)})
    api.post("viewer", "/units", {"name": "nope"})
    text = api.get("viewer", "/metrics").text
    assert 'salesplan_http_requests_total{method="POST",route="/units",status="201"} 1' in text
    assert 'salesplan_http_requests_total{method="POST",route="/units",status="403"} 1' in text
    assert 'salesplan_http_request_duration_seconds_count{method="POST",route="/units"} 2' in text
    assert "salesplan_events_appended_total 1" in text
    assert f"salesplan_event_log_head_position {api.head()}" in text
    for name in ("progress", "audit", "pipeline", "plan_version", "log_clock"):
        assert f'salesplan_projection_position{{projection="{name}"}}' in text
        assert f'salesplan_projection_lag_events{{projection="{name}"}}' in text
    assert api.get("rep", "/metrics").status_code == 403

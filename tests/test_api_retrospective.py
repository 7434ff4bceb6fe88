"""The retrospective and analytics over HTTP, on the scripted quarter (tests/retro_quarter.py).

One walk through every kind of answer: the replay, the baseline, an attribution whose parts sum
to the change, the funnel, alerts evaluated, listed and acknowledged, a report as JSON and CSV,
and the burn-up as JSON and SVG; each stamped with the log position it was computed from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from api.tokens import create_token
from tests.api_helpers import Api, api_fixture  # noqa: F401 — the `api` fixture
from tests.retro_quarter import RetroQuarter


def test_the_quarter_over_http(api: Api) -> None:
    q = RetroQuarter(api.planning)
    q.second_half()
    api.planning.revise_target(q.plan, target_id=q.east_revenue, committed="24000", reason="East lost Ann to West",
                               actor="admin", effective_at=datetime(2026, 3, 2, 9, tzinfo=UTC))
    api.planning.publish_plan(q.plan, note="after the move", actor="admin", effective_at=datetime(2026, 3, 2, 10,
                                                                                                  tzinfo=UTC))
    head = api.head()
    plan = f"/plans/{q.plan}"

    replay = api.get("admin", f"{plan}/replay", step="week", unit_id=str(q.east), wait_for_position=head)
    assert replay.status_code == 200, replay.text
    body = replay.json()
    assert body["position"] == head and replay.headers["Salesplan-Position"] == str(head)
    assert len(body["steps"]) == 14 and body["steps"][0]["start"] == "2026-01-01"
    assert Decimal(body["steps"][-1]["standing"]["actual"]) == Decimal(16000)  # d1 (Ann, still in East on 3 Feb) and d3
    assert [m["kind"] for m in body["markers"]][:1] == ["published"]
    assert "revised" in {m["kind"] for m in body["markers"]}
    daily = api.get("admin", f"{plan}/replay", step="day", span="2026-Q1", known="then")
    assert daily.status_code == 200 and len(daily.json()["steps"]) == 90

    baseline = api.get("admin", f"{plan}/baseline").json()
    assert baseline["position"] == head and [v["version"] for v in baseline["versions"]] == [1, 2]
    east = next(t for t in baseline["targets"] if t["target_id"] == str(q.east_revenue))
    figures = [east["baseline"], *east["versions"], east["current"]]
    assert [Decimal(x) for x in figures] == [Decimal(30000), Decimal(30000), Decimal(24000), Decimal(24000)]
    assert [r["reason"] for r in east["revisions"]] == ["East lost Ann to West"]

    for params in ({"from_version": 1, "to_version": 2}, {"from_version": 1, "to": datetime.now(UTC).date().isoformat()}):
        answer = api.get("viewer", f"{plan}/attribution", unit_id=str(q.east), **params)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert Decimal(result["target_change"]) == Decimal(-6000)
        assert sum(Decimal(p["actual"]) for p in result["parts"]) == Decimal(result["actual_change"])
        attainment = [Decimal(p["attainment"]) for p in result["parts"] if p["attainment"] is not None]
        assert sum(attainment) == Decimal(result["attainment_change"])
    assert api.get("admin", f"{plan}/attribution", from_version=1).status_code == 422
    reasons = api.get("admin", f"{plan}/revision-reasons", target_id=str(q.east_revenue)).json()["reasons"]
    assert [r["kind"] for r in reasons] == ["set", "revised"]

    funnel = api.get("viewer", "/analytics/funnel", span_start="2026-01-01T00:00:00Z",
                     span_end="2026-04-01T00:00:00Z").json()
    (everyone,) = funnel["groups"]
    assert (everyone["key"], everyone["won"], everyone["lost"]) == ("all", 3, 1)
    assert {c: Decimal(x) for c, x in everyone["won_amount"].items()} == {"EUR": Decimal(16000), "USD": Decimal(2000)}
    assert api.get("admin", "/analytics/funnel", span_start="2025-01-01T00:00:00Z",
                   span_end="2026-04-01T00:00:00Z").status_code == 422

    evaluated = api.post("admin", "/alerts/evaluate")
    assert evaluated.status_code == 200, evaluated.text
    assert evaluated.json()["position"] == head
    stalled = api.get("admin", "/alerts", kind="deal_stalled").json()["alerts"]
    bobs = next(a for a in stalled if a["subject_id"] == str(q.d4))
    bob = create_token(api.services.database, member_id=q.bob)[1]
    as_bob = {"Authorization": f"Bearer {bob}"}
    own = api.client.get("/alerts", headers=as_bob).json()["alerts"]
    assert {a["owner_id"] for a in own} == {str(q.bob)} and bobs["id"] in {a["id"] for a in own}
    assert api.post("rep", f"/alerts/{bobs['id']}/acknowledge").status_code == 404  # Ann may not see Bob's
    done = api.client.post(f"/alerts/{bobs['id']}/acknowledge", headers=as_bob)
    assert done.status_code == 200 and done.json()["acknowledged_by"] == str(q.bob)

    report = api.get("admin", f"/reports/members/{q.ann}/2026-03-20")
    assert report.status_code == 200, report.text
    assert report.json()["activities"]["call"] == 1 and report.json()["position"] == head
    csv = api.get("admin", f"/reports/members/{q.ann}/2026-03-20", format="csv")
    assert csv.headers["content-type"].startswith("text/csv") and csv.headers["Salesplan-Position"] == str(head)
    assert csv.text.splitlines()[0] == "section,item,measure,currency,value"
    assert "activities,call,count,,1" in csv.text.splitlines()

    burnup = api.get("admin", f"/targets/{q.east_revenue}/burnup").json()
    assert len(burnup["points"]) == 90 and burnup["position"] == head
    svg = api.get("admin", f"/targets/{q.east_revenue}/burnup.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and svg.text.startswith("<svg")

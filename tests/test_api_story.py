"""A manager and her reps, end to end over HTTP, on SQLite and on PostgreSQL.

Mia manages East. She drafts East's 2026 plan, sets Q2 revenue at 120,000 (stretch 150,000),
splits it 60/40 between her reps Ann and Bob and publishes v1. Ann opens a deal with Globex
in April, works it through the stages and wins it on 20 April; Bob loses his to a cheaper
competitor. In May a key account slips to Q3, so Mia revises Ann's share from 72,000 to
60,000 — the API insists on her reason — and publishes v2. Then everything is read back:
progress now and as of mid-April, the audit trail with the reason, v1 against v2, v1 against
actuals, the pipeline with its stage history, and the change feed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.api_helpers import Api, api_fixture  # noqa: F401 — the `api` fixture

D = Decimal


def money(*values: Any) -> tuple[Any, ...]:
    """Decimal strings by value: "60000" and "60000.00" are the same money."""
    return tuple(None if x is None else D(x) for x in values)


def at(day: str) -> str:
    return f"2026-{day}T10:00:00+02:00"


def test_a_quarter_planned_worked_revised_and_read_back(api: Api) -> None:
    w = api.world

    # --- Mia plans Q2 for East and publishes the baseline --------------------------------------
    plan = api.ok("manager", "/plans", {"name": "East 2026", "span": "2026", "currency": "EUR",
                                        "unit_id": str(w.east), "effective_at": at("03-20")})
    plan_id, version = plan["id"], plan["version"]
    q2 = api.ok("manager", f"/plans/{plan_id}/targets", {
        "metric": "revenue", "period": "2026-Q2", "scope": {"unit_id": str(w.east)}, "committed": "120000",
        "stretch": "150000", "effective_at": at("03-20")}, if_match=version)
    split = api.ok("manager", f"/plans/{plan_id}/decompose", {
        "parent_id": q2["target_id"], "by": "member", "parts": [str(w.ann), str(w.bob)], "method": "weights",
        "weights": ["0.6", "0.4"], "reason": "Ann carries the larger accounts", "effective_at": at("03-21")},
        if_match=q2["version"])
    ann_target, bob_target = split["child_ids"]
    v1 = api.ok("manager", f"/plans/{plan_id}/publish", {"note": "Q2 baseline", "effective_at": at("03-25")},
                if_match=split["version"])
    assert v1["plan_version"] == 1
    v1_position = v1["position"]

    plan_read = api.get("rep", f"/plans/{plan_id}")
    assert plan_read.headers["etag"] == f'"{v1["version"]}"'
    targets = {t["target_id"]: t for t in plan_read.json()["targets"]}
    assert money(targets[ann_target]["committed"], targets[bob_target]["committed"]) == (72000, 48000)
    assert money(targets[ann_target]["stretch"], targets[bob_target]["stretch"]) == (90000, 60000)

    # --- the reps work their deals ---------------------------------------------------------------
    deal = api.ok("rep", "/deals", {
        "name": "Globex platform", "account_id": str(w.account), "owner_id": str(w.ann), "product_id": str(w.product),
        "amount": "30000", "currency": "EUR", "expected_close": "2026-05-15", "effective_at": at("04-02")})
    deal_id, version = deal["id"], deal["version"]
    for stage, day in (("qualified", "04-06"), ("proposal", "04-10")):
        version = api.ok("rep", f"/deals/{deal_id}/stage", {"stage": stage, "effective_at": at(day)},
                         if_match=version)["version"]
    api.ok("rep", "/activities", {"kind": "demo", "member_id": str(w.ann), "deal_id": deal_id,
                                  "note": "platform demo for the CFO", "effective_at": at("04-12")})
    assert api.post("other_rep", f"/deals/{deal_id}/win", {}, if_match=version).status_code == 404
    assert api.get("other_rep", f"/deals/{deal_id}").status_code == 404
    won = api.ok("rep", f"/deals/{deal_id}/win", {"effective_at": at("04-20")}, if_match=version)

    bob_deal = api.ok("other_rep", "/deals", {
        "name": "Initech pilot", "owner_id": str(w.bob), "product_id": str(w.product), "amount": "20000",
        "currency": "EUR", "expected_close": "2026-06-10", "effective_at": at("04-03")})
    api.ok("other_rep", f"/deals/{bob_deal['id']}/lose", {"reason": "a cheaper competitor",
                                                          "effective_at": at("04-28")}, if_match=bob_deal["version"])

    # --- May: a key account slips, Mia revises Ann's share and publishes v2 -------------------------
    plan_version = api.version(plan_id)
    no_reason = api.post("manager", f"/plans/{plan_id}/revise", {"target_id": ann_target, "committed": "60000",
                                                                 "effective_at": at("05-05")}, if_match=plan_version)
    assert no_reason.status_code == 422
    assert (no_reason.json()["rule"], no_reason.json()["pointer"]) == ("reason.required", "/reason")
    reason = "key account Umbrella slipped to Q3"
    # Ann's share is part of East's Q2: the revision must say where the 12,000 go.
    nowhere = api.post("manager", f"/plans/{plan_id}/revise", {
        "target_id": ann_target, "committed": "60000", "stretch": "75000", "reason": reason,
        "effective_at": at("05-05")}, if_match=plan_version)
    assert (nowhere.status_code, nowhere.json()["rule"], nowhere.json()["pointer"]) == (
        422, "target.absorb_required", "/absorb")
    revised = api.ok("manager", f"/plans/{plan_id}/revise", {
        "target_id": ann_target, "committed": "60000", "stretch": "75000", "absorb": "parent", "reason": reason,
        "effective_at": at("05-05")}, if_match=plan_version)
    # East's Q2 follows: 120,000 − 12,000 = 108,000, its stretch 150,000 − 15,000 = 135,000.
    assert revised["affected_ids"] == [q2["target_id"]]
    v2 = api.ok("manager", f"/plans/{plan_id}/publish", {"note": "May adjustment", "effective_at": at("05-06")},
                if_match=revised["version"])
    assert v2["plan_version"] == 2
    last = v2["position"]

    # --- progress: now, as of mid-April, and as known when v1 was published ---------------------------
    def progress(**params: Any) -> dict[str, dict[str, Any]]:
        response = api.get("manager", "/progress", plan_id=plan_id, wait_for_position=last, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert response.headers["salesplan-position"] == str(body["position"])
        return {row["target_id"]: row for row in body["rows"]}

    now = progress()
    assert money(now[ann_target]["committed"], now[ann_target]["actual"], now[ann_target]["attainment"]) == (
        60000, 30000, D("0.5"))
    assert money(now[bob_target]["actual"], now[q2["target_id"]]["actual"], now[q2["target_id"]]["gap"]) == (
        0, 30000, 78000)
    assert money(now[q2["target_id"]]["committed"], now[q2["target_id"]]["stretch"]) == (108000, 135000)

    mid_april = progress(as_of="2026-04-15T00:00:00Z")
    assert money(mid_april[ann_target]["actual"], mid_april[ann_target]["committed"]) == (0, 72000)  # revised in May
    june = progress(as_of="2026-06-15T00:00:00Z")
    assert money(june[ann_target]["actual"], june[ann_target]["committed"]) == (30000, 60000)
    june_as_known_at_v1 = progress(as_of="2026-06-15T00:00:00Z", known_at_position=v1_position)
    assert money(june_as_known_at_v1[ann_target]["actual"], june_as_known_at_v1[ann_target]["committed"]) == (0, 72000)

    # Ann reads her unit's progress; not West's.
    assert api.get("rep", "/progress", plan_id=plan_id).status_code == 200
    assert api.get("rep", "/progress", unit_id=str(w.west)).status_code == 403

    # --- who changed what and why ---------------------------------------------------------------------
    audit = api.get("manager", "/audit", plan_id=plan_id, entity="target", wait_for_position=last)
    assert audit.status_code == 200, audit.text
    revisions = [r for r in audit.json()["rows"] if r["entity_id"] == ann_target and r["reason"] == reason]
    assert len(revisions) == 1
    assert revisions[0]["actor"] == str(w.mia)
    change = revisions[0]["changes"]["committed"]
    assert money(change["before"], change["after"]) == (72000, 60000)
    deal_history = api.get("viewer", "/audit", entity="deal", entity_id=deal_id, limit=2).json()
    assert len(deal_history["rows"]) == 2 and deal_history["next_cursor"]
    rest = api.get("viewer", "/audit", entity="deal", entity_id=deal_id, cursor=deal_history["next_cursor"]).json()
    assert [r["event_type"] for r in deal_history["rows"] + rest["rows"]] == [
        "Deal.Opened", "Deal.StageChanged", "Deal.StageChanged", "Deal.Won"]
    assert api.get("rep", "/audit").status_code == 403

    # --- v1 against v2, and v1 against what happened ---------------------------------------------------
    versions = api.get("manager", f"/plans/{plan_id}/versions", wait_for_position=last).json()["versions"]
    assert [(v["version"], v["note"]) for v in versions] == [(1, "Q2 baseline"), (2, "May adjustment")]
    assert [v["version"] for v in api.get("manager", f"/plans/{plan_id}/versions",
                                          known_at_position=v1_position).json()["versions"]] == [1]
    comparison = api.get("manager", f"/plans/{plan_id}/comparison", from_version=1, to_version=2).json()
    assert comparison["added"] == [] and comparison["removed"] == []
    changed = {c["target"]["target_id"]: c for c in comparison["changed"]}
    assert set(changed) == {ann_target, q2["target_id"]}
    moved = changed[ann_target]
    assert money(moved["before_committed"], moved["after_committed"], moved["committed_delta"]) == (
        72000, 60000, -12000)
    assert moved["reasons"] == [reason]
    assert money(changed[q2["target_id"]]["committed_delta"]) == (-12000,)
    # One revision with its effect: Ann's target, then East's Q2 rolled up with it, at one position.
    assert [(c["target_id"], c["kind"], c["reason"]) for c in comparison["changes"]] == [
        (ann_target, "revised", reason), (q2["target_id"], "rolled_up", reason)]
    assert len({c["position"] for c in comparison["changes"]}) == 1
    tree_v1 = api.get("manager", f"/plans/{plan_id}/versions/1").json()
    assert money({t["target_id"]: t["committed"] for t in tree_v1["targets"]}[ann_target]) == (72000,)
    assert api.get("manager", f"/plans/{plan_id}/versions/3").status_code == 404

    retro = api.get("manager", f"/plans/{plan_id}/versions/1/actuals", wait_for_position=last).json()
    ann_v1 = next(r for r in retro["rows"] if r["target"]["target_id"] == ann_target)
    assert money(ann_v1["target"]["committed"], ann_v1["actual"], ann_v1["attainment"],
                 ann_v1["current_committed"]) == (72000, 30000, D("0.4167"), 60000)

    # --- the pipeline, the deal's stage history, and the change feed -------------------------------------
    pipeline = api.get("rep", "/pipeline", wait_for_position=last).json()
    assert [d["deal_id"] for d in pipeline["deals"]] == [deal_id]  # Ann sees her own deals only
    detail = api.get("manager", f"/pipeline/deals/{deal_id}").json()
    assert [s["stage"] for s in detail["stages"]] == ["lead", "qualified", "proposal", "won"]
    summary = {(r["stage"]): r for r in api.get("manager", "/pipeline/summary", unit_id=str(w.east)).json()["rows"]}
    assert (summary["won"]["count"], *money(summary["won"]["amount"])) == (1, 30000)
    assert (summary["lost"]["count"], *money(summary["lost"]["amount"])) == (1, 20000)

    feed = api.get("viewer", "/events", after=v1_position, limit=1000).json()
    kinds = [e["type"] for e in feed["events"]]
    assert kinds.count("Deal.Won") == 1 and kinds[-2:] == ["Plan.TargetRevised", "Plan.Published"]
    revision_event = feed["events"][-2]
    assert revision_event["data"]["reason"] == reason
    assert money(revision_event["data"]["committed"]) == (60000,)
    assert revision_event["actor"] == str(w.mia)
    assert revision_event["effective_at"].startswith("2026-05-05T08:00:00")
    assert feed["next_cursor"] is None and feed["head"] == last
    assert won["position"] in [e["position"] for e in feed["events"]]

"""Collection reads over HTTP: what a front end lists, picks from and draws as trees, on SQLite and PostgreSQL.

The organisation of ``tests.api_helpers`` (ACME → East → East Team with Ann and Bob; West with
Wes and Cy; Mia manages East), read back as lists and a tree with every id named, at cuts on
both clocks, page by page with one cursor scheme.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tests.api_helpers import Api, api_fixture, open_deal  # noqa: F401 — the `api` fixture


def names(page: dict[str, Any], field: str = "name") -> list[str]:
    return [row[field] for row in page["rows"]]


def read_all(api: Api, role: str, path: str, limit: int, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every row of a list, page by page; and how many pages it took."""
    rows: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        page = api.get(role, path, limit=limit, **params, **({"cursor": cursor} if cursor else {})).json()
        rows += page["rows"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return rows, pages


def test_units_are_listed_by_name_with_their_parent_and_drawn_as_a_tree(api: Api) -> None:
    w = api.world
    page = api.get("rep", "/units", wait_for_position=api.head())
    assert page.status_code == 200
    body = page.json()
    assert page.headers["salesplan-position"] == str(body["position"])
    assert [(r["name"], r["parent_name"]) for r in body["rows"]] == [
        ("ACME", None), ("East", "ACME"), ("East Team", "East"), ("West", "ACME")]
    assert names(api.get("rep", "/units", roots_only=True).json()) == ["ACME"]
    assert names(api.get("rep", "/units", parent_id=str(w.east)).json()) == ["East Team"]
    assert names(api.get("rep", "/units", q="EAST").json()) == ["East", "East Team"]
    assert names(api.get("rep", "/units", q="%").json()) == []  # a wildcard is a character like any other

    tree = api.get("viewer", "/units/tree", members=True).json()["roots"]
    assert [(n["name"], [c["name"] for c in n["children"]]) for n in tree] == [("ACME", ["East", "West"])]
    east, west = tree[0]["children"]
    assert [m["name"] for m in east["members"]] == ["Mia"]
    assert [(t["name"], [m["name"] for m in t["members"]]) for t in east["children"]] == [("East Team", ["Ann", "Bob"])]
    assert [m["name"] for m in west["members"]] == ["Cy", "Wes"]
    sub = api.get("viewer", "/units/tree", root_id=str(w.east)).json()["roots"]
    assert [(n["name"], [c["name"] for c in n["children"]], n["members"]) for n in sub] == [("East", ["East Team"], [])]
    assert api.get("viewer", "/units/tree", root_id=str(w.ann)).status_code == 404

    before = api.head()
    api.planning.deactivate_unit(w.west, reason="merged into East", actor="setup")
    after = api.head()
    assert names(api.get("rep", "/units", active=False, wait_for_position=after).json()) == ["West"]
    active = api.get("viewer", "/units/tree", active_only=True).json()["roots"]
    assert [c["name"] for c in active[0]["children"]] == ["East"]
    then = api.get("viewer", "/units", active=True, known_at_position=before).json()
    assert then["position"] == before and names(then) == ["ACME", "East", "East Team", "West"]


def test_a_listing_pages_at_the_position_of_its_first_page(api: Api) -> None:
    first = api.get("rep", "/units", limit=2, wait_for_position=api.head()).json()
    assert names(first) == ["ACME", "East"] and first["next_cursor"]
    api.planning.add_unit(name="Zulu", parent_id=api.world.west, actor="setup")
    api.services.wait_for(api.head())
    second = api.get("rep", "/units", limit=2, cursor=first["next_cursor"]).json()
    # Read where the first page was read: a unit added meanwhile does not slip into the middle of the listing.
    assert names(second) == ["East Team", "West"] and second["next_cursor"] is None
    assert second["position"] == first["position"]
    rows, pages = read_all(api, "rep", "/units", 2)
    assert [r["name"] for r in rows] == ["ACME", "East", "East Team", "West", "Zulu"] and pages == 3


def test_a_cursor_continues_only_the_listing_it_came_from(api: Api) -> None:
    first = api.get("rep", "/units", limit=1, wait_for_position=api.head()).json()
    assert first["next_cursor"]
    for path, params in (("/units", {"active": True}), ("/members", {}), ("/units", {"known_at_position": 1})):
        refused = api.get("rep", path, limit=1, cursor=first["next_cursor"], **params)
        assert refused.status_code == 422, (path, params)
        assert refused.json()["rule"] == "cursor.invalid" and refused.json()["parameter"] == "cursor"
    for garbage in ("abc", "e30", "x" * 3000, "a+b"):
        assert api.get("rep", "/units", cursor=garbage).status_code == 422
    assert api.get("rep", "/units", limit=1001).status_code == 422
    assert api.get("rep", "/units", limit=0).status_code == 422


def test_members_by_unit_role_and_activity_carry_their_unit_name(api: Api) -> None:
    w = api.world
    api.planning.deactivate_member(w.bob, reason="left the company", actor="setup")
    api.services.wait_for(api.head())
    team = api.get("rep", "/members", unit_id=str(w.east_team)).json()
    assert [(r["name"], r["unit_name"], r["active"]) for r in team["rows"]] == [
        ("Ann", "East Team", True), ("Bob", "East Team", False)]
    assert names(api.get("rep", "/members", unit_id=str(w.east), subunits=True, active=True).json()) == ["Ann", "Mia"]
    assert names(api.request("rep", "GET", "/members", params={"role": "manager"}).json()) == ["Mia", "Wes"]
    rows, pages = read_all(api, "viewer", "/members", 2)
    assert [r["name"] for r in rows] == ["Ann", "Bob", "Cy", "Mia", "Wes"] and pages == 3
    assert api.request("rep", "GET", "/members", params={"role": "boss"}).status_code == 422


def test_products_and_accounts_come_from_their_own_projection_at_any_cut(api: Api) -> None:
    planning = api.planning
    gadget = planning.add_product(name="Gadget", product_line="gadgets", list_price="250", currency="USD",
                                  actor="setup").id
    planning.add_account(name="Initech", segment="smb", region="west", actor="setup")
    before = api.head()
    planning.change_list_price(gadget, list_price="199.90", actor="setup")
    planning.reclassify_account(api.world.account, segment="strategic", region="east", actor="setup")
    now = api.head()
    products = api.get("rep", "/products", wait_for_position=now).json()
    assert [(r["name"], r["product_line"], Decimal(r["list_price"]), r["currency"]) for r in products["rows"]] == [
        ("Gadget", "gadgets", Decimal("199.90"), "USD"), ("Widget Pro", "widgets", Decimal(1000), "EUR")]
    assert names(api.get("rep", "/products", product_line="widgets").json()) == ["Widget Pro"]
    assert names(api.get("rep", "/products", currency="USD").json()) == ["Gadget"]
    then = api.get("rep", "/products", known_at_position=before).json()
    assert Decimal(then["rows"][0]["list_price"]) == 250
    accounts = api.get("rep", "/accounts").json()
    assert [(r["name"], r["segment"], r["region"]) for r in accounts["rows"]] == [
        ("Globex", "strategic", "east"), ("Initech", "smb", "west")]
    assert names(api.get("rep", "/accounts", segment="smb").json()) == ["Initech"]
    assert [r["segment"] for r in api.get("rep", "/accounts", known_at_position=before).json()["rows"]] == [
        "enterprise", "smb"]


def _quarter_plan(api: Api) -> tuple[str, dict[str, str]]:
    """East's 2026 plan: Q2 revenue 120,000 split 60/40 between Ann and Bob (v1); Ann revised to 60,000, the
    difference taken from Q2, so the tree still adds up: 108,000 = 60,000 + 48,000 (v2)."""
    w = api.world
    plan = api.ok("manager", "/plans", {"name": "East 2026", "span": "2026", "currency": "EUR",
                                        "unit_id": str(w.east)})
    q2 = api.ok("manager", f"/plans/{plan['id']}/targets", {
        "metric": "revenue", "period": "2026-Q2", "scope": {"unit_id": str(w.east)}, "committed": "120000",
        "stretch": "150000"}, if_match=plan["version"])
    split = api.ok("manager", f"/plans/{plan['id']}/decompose", {
        "parent_id": q2["target_id"], "by": "member", "parts": [str(w.bob), str(w.ann)], "method": "weights",
        "weights": ["0.4", "0.6"]}, if_match=q2["version"])
    bob, ann = split["child_ids"]
    v1 = api.ok("manager", f"/plans/{plan['id']}/publish", {"note": "baseline"}, if_match=split["version"])
    revised = api.ok("manager", f"/plans/{plan['id']}/revise", {
        "target_id": ann, "committed": "60000", "absorb": "parent", "reason": "a key account slipped to Q3"},
        if_match=v1["version"])
    v2 = api.ok("manager", f"/plans/{plan['id']}/publish", {"note": "May"}, if_match=revised["version"])
    deals = api.ok("manager", f"/plans/{plan['id']}/targets", {
        "metric": "deals_won", "period": "2026-Q2", "scope": {"unit_id": str(w.east)}, "committed": "12",
        "reason": "count the wins too"},
        if_match=v2["version"])
    return plan["id"], {"q2": q2["target_id"], "ann": ann, "bob": bob, "deals": deals["target_id"]}


def test_a_plans_targets_as_a_tree_with_their_value_in_every_version(api: Api) -> None:
    plan_id, t = _quarter_plan(api)
    body = api.get("rep", f"/plans/{plan_id}/targets", wait_for_position=api.head()).json()
    assert (body["plan_name"], body["currency"], body["published_versions"]) == ("East 2026", "EUR", [1, 2])

    def row(r: dict[str, Any]) -> tuple[Any, ...]:
        owner = r["member_name"] or r["unit_name"]
        return (r["target_id"], r["depth"], owner, Decimal(r["committed"]),
                [(v["version"], Decimal(v["committed"])) for v in r["versions"]])

    # Siblings by metric (deals_won before revenue), then owner name (Ann before Bob); children after their parent.
    assert [row(r) for r in body["rows"]] == [
        (t["deals"], 0, "East", 12, []),
        (t["q2"], 0, "East", 108000, [(1, 120000), (2, 108000)]),
        (t["ann"], 1, "Ann", 60000, [(1, 72000), (2, 60000)]),
        (t["bob"], 1, "Bob", 48000, [(1, 48000), (2, 48000)]),
    ]
    ann = body["rows"][2]
    assert ann["parent_id"] == t["q2"] and Decimal(ann["stretch"]) == 90000
    assert [Decimal(v["stretch"]) for v in ann["versions"]] == [90000, 90000]
    rows, pages = read_all(api, "rep", f"/plans/{plan_id}/targets", 3)
    assert [r["target_id"] for r in rows] == [t["deals"], t["q2"], t["ann"], t["bob"]] and pages == 2
    only = api.get("rep", f"/plans/{plan_id}/targets", member_id=str(api.world.ann)).json()["rows"]
    assert [(r["target_id"], r["depth"]) for r in only] == [(t["ann"], 1)]
    assert api.get("rep", f"/plans/{api.world.east}/targets").status_code == 404

    plans = api.get("rep", "/plans", unit_id=str(api.world.east)).json()["rows"]
    assert [(p["name"], p["unit_name"], p["status"], p["published_version"]) for p in plans] == [
        ("East 2026", "East", "published", 2)]
    assert api.get("rep", "/plans", status="draft").json()["rows"] == []


def test_activities_newest_first_credited_to_the_unit_of_their_time(api: Api) -> None:
    w = api.world
    planning = api.planning
    deal = open_deal(api, w.ann)
    demo = planning.log_activity(kind="demo", member_id=w.ann, deal_id=deal, actor="setup").id
    call = planning.log_activity(kind="call", member_id=w.bob, actor="setup").id
    planning.move_member(w.ann, unit_id=w.west, reason="covers West from May", actor="setup")
    visit = planning.log_activity(kind="visit", member_id=w.ann, actor="setup").id
    api.services.wait_for(api.head())

    every = api.get("manager", "/activities").json()["rows"]
    assert [(r["activity_id"], r["member_name"], r["unit_name"]) for r in every] == [
        (str(visit), "Ann", "West"), (str(call), "Bob", "East Team"), (str(demo), "Ann", "East Team")]
    assert (every[2]["deal_name"], every[2]["account_name"]) == ("Globex renewal", "Globex")
    east = api.get("manager", "/activities", unit_id=str(w.east)).json()["rows"]
    assert [r["activity_id"] for r in east] == [str(call), str(demo)]  # Ann's visit was logged in West
    mine = api.get("rep", "/activities").json()["rows"]
    assert [r["activity_id"] for r in mine] == [str(visit), str(demo)]
    assert api.get("rep", "/activities", member_id=str(w.bob)).status_code == 403
    assert [r["activity_id"] for r in api.get("manager", "/activities", kind="call").json()["rows"]] == [str(call)]
    rows, pages = read_all(api, "manager", "/activities", 1)
    assert [r["activity_id"] for r in rows] == [str(visit), str(call), str(demo)] and pages == 3
    # Back-dated to before Cy was added: credited to the unit he was added to, as progress counts it.
    early = planning.log_activity(kind="email", member_id=w.cy, actor="setup",
                                  effective_at=datetime(2020, 1, 6, 9, 0, tzinfo=UTC)).id
    back = api.get("manager", "/activities", member_id=str(w.cy), wait_for_position=api.head()).json()["rows"]
    assert [(r["activity_id"], r["unit_name"]) for r in back] == [(str(early), "West")]

"""One figure, every read: East's Q1 revenue as /progress, /baseline, /replay, the version actuals, the
attribution, the alerts and the report give it — the same, and equal to the hand calculation.

The scripted quarter (``tests.test_replay.RetroQuarter``) has everything that made the reads disagree: Ann
moves from East to West on 20 March, d6 (won 3 February) is entered late on 12 March, West is revised
between v1 and v2, d3 slips out of the quarter, and East's revision to 33,000 is back-dated.

By hand, at the end of March as known now: East won d1 10,000 (Ann, 20 January), d12 7,000 (Bob,
10 February) and d9 3,000 (Ann, 5 March, still in East): 20,000, against 33,000 (v1 and v2: 30,000).
West won d6 3,000 (Cid). Ann's move on 20 March moves none of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import eventsourcing.domain
import pytest

from tests.api_helpers import Api, running_api
from tests.test_replay import RecordedClock, RetroQuarter, end_of

END_OF_MARCH = end_of(3, 31).isoformat().replace("+00:00", "Z")
D = Decimal


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[tuple[Api, RetroQuarter]]:
    clock = RecordedClock()
    monkeypatch.setattr(eventsourcing.domain, "datetime_now_with_tzinfo", clock)
    with running_api(database_url) as api:
        api.planning.clock = clock
        quarter = RetroQuarter(api.planning, clock)
        assert api.get("admin", "/projections", wait_for_position=api.head()).status_code == 200
        yield api, quarter


def read(api: Api, path: str, **params: Any) -> Any:
    response = api.get("admin", path, **params)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def test_east_q1_revenue_is_the_same_figure_in_every_read(told: tuple[Api, RetroQuarter]) -> None:
    api, q = told
    plan = f"/plans/{q.plan}"
    head = api.head()

    progress = read(api, "/progress", plan_id=str(q.plan), as_of=END_OF_MARCH)
    (east,) = [r for r in progress["rows"] if r["target_id"] == str(q.east_revenue)]
    assert (D(east["committed"]), D(east["actual"]), east["unit_name"]) == (D(33000), D(20000), "East")
    assert D(east["attainment"]) == D("0.6061")  # 20,000 / 33,000

    baseline = read(api, f"{plan}/baseline", as_of=END_OF_MARCH)
    (row,) = [t for t in baseline["targets"] if t["target_id"] == str(q.east_revenue)]
    assert [D(x) for x in (*row["versions"], row["current"], row["actual"])] == [D(30000), D(30000), D(33000),
                                                                                  D(20000)]
    totals = {(t["metric"], t["unit_id"]): t for t in baseline["totals"]}
    assert (D(totals[("revenue", str(q.east))]["current"]), D(totals[("revenue", str(q.east))]["actual"])) == (
        D(33000), D(20000))
    assert D(totals[("revenue", str(q.west))]["actual"]) == D(3000)  # d6 only: Ann's wins stay with East

    replay = read(api, f"{plan}/replay", unit_id=str(q.east), step="day", known="now")
    by_day = {s["start"]: s["standing"] for s in replay["steps"]}
    assert (D(by_day["2026-03-31"]["target"]), D(by_day["2026-03-31"]["actual"])) == (D(33000), D(20000))
    # The move on 20 March: East's actual does not drop, West's does not jump.
    assert D(by_day["2026-03-19"]["actual"]) == D(by_day["2026-03-20"]["actual"]) == D(20000)
    west = {s["start"]: s["standing"] for s in read(api, f"{plan}/replay", unit_id=str(q.west), step="day")["steps"]}
    assert D(west["2026-03-19"]["actual"]) == D(west["2026-03-20"]["actual"]) == D(3000)

    actuals = read(api, f"{plan}/versions/2/actuals", as_of=END_OF_MARCH)
    (v2,) = [r for r in actuals["rows"] if r["target"]["target_id"] == str(q.east_revenue)]
    assert (D(v2["target"]["committed"]), D(v2["actual"]), D(v2["attainment"])) == (D(30000), D(20000), D("0.6667"))

    attribution = read(api, f"{plan}/attribution", unit_id=str(q.east), to="2026-03-31", known="now",
                       **{"from": "2026-02-28"})
    assert (D(attribution["b"]["target"]), D(attribution["b"]["actual"])) == (D(33000), D(20000))
    assert attribution["b"]["target_ids"] == [str(q.east_revenue)]

    preview = read(api, "/alerts/preview", as_of=END_OF_MARCH)
    (behind,) = [a for a in preview["alerts"] if a["kind"] == "target_behind" and a["subject_id"] == str(q.east_revenue)]
    assert (D(behind["details"]["actual"]), D(behind["details"]["committed"])) == (D(20000), D(33000))

    report = read(api, f"/reports/units/{q.east}/2026-W13", as_of=END_OF_MARCH)
    (in_report,) = [r for r in report["targets"] if r["target_id"] == str(q.east_revenue)]
    assert D(in_report["actual"]) == D(20000)

    # Every answer says which log position it was computed from: all of it.
    assert {progress["position"], baseline["position"], replay["position"], actuals["position"],
            attribution["position"], preview["position"], report["position"]} == {head}


def test_version_totals_count_a_decomposed_target_once(told: tuple[Api, RetroQuarter]) -> None:
    api, q = told
    totals = read(api, f"/plans/{q.plan}/comparison", from_version=1, to_version=2)["totals"]
    by_metric = {(t["metric"], t["period"]): t for t in totals}
    # Revenue: the company's own target stands for it — 50,000 in v1, 48,000 in v2 (West's cut to 18,000 rolled
    # up into it) — East's 30,000, West's and Ann's 12,000 are parts of it, never added on top. New deals: East's 8
    # and Cid's 3 (the company has no new-deals target of its own).
    assert (D(by_metric[("revenue", "2026-Q1")]["from_committed"]), D(by_metric[("revenue", "2026-Q1")]["to_committed"])
            ) == (D(50000), D(48000))
    assert D(by_metric[("new_deals", "2026-Q1")]["to_committed"]) == D(11)
    assert D(by_metric[("deals_won", "2026-Q1")]["to_committed"]) == D(6)
    assert ("win_rate", "2026-Q1") not in by_metric

"""Daily and weekly reports on the retrospective quarter (tests/retro_quarter.py), answers worked out by hand.

East, week 2026-W06 (Monday 2 to Sunday 8 February), asked on 25 March (so as of 9 Feb 00:00):
    activities: Ann (in East until March) calls 2 Feb, twice on 3 Feb, visits 4 Feb; Bob demos 3 Feb;
    stage changes: d1 won 3 Feb, d2 lost 5 Feb, d3 to proposal 7 Feb (d4 opened on 1 Feb, the week before);
    won 1 (10,000 EUR), lost 1 (4,000 EUR); t0 done 5 Feb; t5 due 4 Feb still open on the 9th: overdue;
    targets: East revenue: 10,000 won, 39 of 90 days gone: expected 12,999.99, pace 0.7692 (behind);
        Ann's revenue (Ann was in East then): expected 5,200.00, pace 1.9231 (ahead);
    alerts: none yet (the first run was on 16 March).

Ann, 20 March, asked on 25 March after the second alert run:
    one call; d7 opened (an opening is no stage change); t1 done; no task overdue (t4 is due 25 March);
    her revenue: 10,000 of 12,000, 79 of 90 days gone: expected 10,533.34, pace 0.9494 (at risk);
    alerts open at the end of the day: her low coverage, and t1 overdue (resolved only by the 25 March run).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from domain.application import SalesPlanning
from domain.errors import NotFound, ValidationError
from projections.processes.alerts import AlertConfig, raise_alerts, setup
from projections.queries.analytics import jsonable
from projections.queries.reports import burnup, burnup_svg, member_report, report_csv, report_window, unit_report
from tests.retro_quarter import RetroQuarter, catch_up

MID_MARCH = datetime(2026, 3, 16, tzinfo=UTC)
LATE_MARCH = datetime(2026, 3, 25, tzinfo=UTC)


@pytest.fixture
def told(app: SalesPlanning) -> tuple[RetroQuarter, int]:
    """The whole quarter, with the two alert runs of test_alerts; returns (quarter, head)."""
    quarter = RetroQuarter(app)
    catch_up(app)
    setup(app.database)
    config = AlertConfig(coverage_below=Decimal("0.5"))
    raise_alerts(app.database, at=MID_MARCH, config=config)
    quarter.second_half()
    head = catch_up(app)
    raise_alerts(app.database, at=LATE_MARCH, config=config)
    return quarter, head


def test_east_in_week_six(app: SalesPlanning, told: tuple[RetroQuarter, int]) -> None:
    q, head = told
    with app.database.engine.connect() as conn:
        report = unit_report(conn, unit_id=q.east, period="2026-W06", at=LATE_MARCH, position=head)
    assert (report.kind, report.name, report.position) == ("weekly", "East", head)
    assert (report.window_start, report.window_end, report.as_of) == (
        datetime(2026, 2, 2, tzinfo=UTC), datetime(2026, 2, 9, tzinfo=UTC), datetime(2026, 2, 9, tzinfo=UTC))
    assert report.activities == {"call": 3, "visit": 1, "meeting": 0, "demo": 1, "email": 0}
    assert report.activities_total == 5
    assert (report.stage_changes, report.deals_moved) == (3, 3)
    assert (report.won_count, report.won_amount) == (1, {"EUR": Decimal("10000.00")})
    assert (report.lost_count, report.lost_amount) == (1, {"EUR": Decimal("4000.00")})
    assert (report.tasks_done, report.tasks_overdue) == (1, 1)
    targets = {r.target_id: r for r in report.targets}
    assert set(targets) == {q.east_revenue, q.ann_revenue}
    east = targets[q.east_revenue]
    # 9 February is 31 + 8 = 39 of Q1's 90 days: 30,000 × 39/90 = 13,000.00 expected; 10,000 / 13,000 = 0.7692.
    assert (east.actual, east.expected_to_date, east.pace, east.pace_status) == (
        Decimal("10000.00"), Decimal("13000.00"), Decimal("0.7692"), "behind")
    ann = targets[q.ann_revenue]
    assert (ann.expected_to_date, ann.pace, ann.pace_status) == (Decimal("5200.00"), Decimal("1.9231"), "ahead")
    assert report.open_alerts == []

    # West that week: Cid did nothing; Ann's facts stay with East.
    with app.database.engine.connect() as conn:
        west = unit_report(conn, unit_id=q.west, period="2026-W06", at=LATE_MARCH, position=head)
    assert (west.activities_total, west.stage_changes, west.won_count, west.tasks_done) == (0, 0, 0, 0)


def test_ann_on_the_twentieth_of_march(app: SalesPlanning, told: tuple[RetroQuarter, int]) -> None:
    q, head = told
    with app.database.engine.connect() as conn:
        report = member_report(conn, member_id=q.ann, period="2026-03-20", at=LATE_MARCH, position=head)
    assert (report.kind, report.name, report.as_of) == ("daily", "Ann", datetime(2026, 3, 21, tzinfo=UTC))
    assert report.activities["call"] == 1 and report.activities_total == 1
    assert (report.stage_changes, report.deals_moved, report.won_count, report.lost_count) == (0, 0, 0, 0)
    assert (report.tasks_done, report.tasks_overdue) == (1, 0)
    [revenue] = report.targets
    assert (revenue.target_id, revenue.actual, revenue.expected_to_date, revenue.pace, revenue.pace_status) == (
        # 21 March: 31 + 28 + 20 = 79 of 90 days; 12,000 × 79/90 = 10,533.33 (10,533.333…); 10,000 / that = 0.9494.
        q.ann_revenue, Decimal("10000.00"), Decimal("10533.33"), Decimal("0.9494"), "at_risk")
    assert sorted((a.kind, a.subject_id) for a in report.open_alerts) == [
        ("coverage_low", q.ann_revenue), ("task_overdue", q.t1)]

    as_json = json.loads(json.dumps(jsonable(report)))
    assert as_json["targets"][0]["pace"] == "0.9494" and as_json["as_of"] == "2026-03-21T00:00:00+00:00"

    rows = list(csv.reader(io.StringIO(report_csv(report))))
    assert rows[0] == ["section", "item", "measure", "currency", "value"]
    assert ["report", "", "position", "", str(head)] in rows
    assert ["activities", "call", "count", "", "1"] in rows
    assert ["tasks", "done", "count", "", "1"] in rows
    assert ["target", str(q.ann_revenue), "actual", "EUR", "10000.00"] in rows
    assert ["target", str(q.ann_revenue), "pace_status", "", "at_risk"] in rows
    assert sum(1 for r in rows if r[0] == "alert") == 2
    assert all(len(r) == 5 for r in rows)


def test_a_report_for_a_running_day_stops_at_now(app: SalesPlanning, told: tuple[RetroQuarter, int]) -> None:
    q, head = told
    with app.database.engine.connect() as conn:
        # 20 March, asked at 08:00, before Ann's call (09:00) and t1's completion were effective.
        early = member_report(conn, member_id=q.ann, period="2026-03-20", at=datetime(2026, 3, 20, 8, tzinfo=UTC),
                              position=head)
        assert (early.as_of, early.activities_total, early.tasks_done) == (datetime(2026, 3, 20, 8, tzinfo=UTC), 0, 0)
        assert early.tasks_overdue == 1  # t1, due 10 March, still open at 08:00
        with pytest.raises(ValidationError):
            member_report(conn, member_id=q.ann, period="2026-03-21", at=datetime(2026, 3, 20, tzinfo=UTC),
                          position=head)
        with pytest.raises(NotFound):
            member_report(conn, member_id=uuid4(), period="2026-03-20", at=LATE_MARCH, position=head)
    for bad in ("2026-02-30", "2026-Q1", "2026-W54", "yesterday"):
        with pytest.raises(ValidationError):
            report_window(bad)
    assert report_window("2026-W12").start == datetime(2026, 3, 16, tzinfo=UTC)


def test_the_burn_up_of_east_revenue(app: SalesPlanning, told: tuple[RetroQuarter, int], tmp_path: Path) -> None:
    q, head = told
    with app.database.engine.connect() as conn:
        series = burnup(conn, target_id=q.east_revenue, position=head, until=LATE_MARCH)
    assert (series.metric, series.period, series.currency) == ("revenue", "2026-Q1", "EUR")
    assert len(series.points) == 83  # 1 January to 24 March, each as it stood at the end of the day
    days = {p.day: p for p in series.points}
    first = days[date(2026, 1, 1)]
    assert (first.committed, first.expected_to_date, first.actual) == (
        Decimal("30000"), Decimal("333.33"), Decimal("0.00"))  # 1/90 of 30,000
    assert days[date(2026, 2, 2)].actual == Decimal("0.00")
    feb3 = days[date(2026, 2, 3)]
    # d1 won 10,000; open in East with a Q1 close: d3 6,000 × 0.4, d2 4,000 × 0.2, d4 3,000 × 0.1.
    assert (feb3.actual, feb3.forecast) == (Decimal("10000.00"), Decimal("13500.00"))
    assert days[date(2026, 3, 9)].actual == Decimal("16000.00")
    assert series.points[-1].as_of == LATE_MARCH

    svg = burnup_svg(series, title="East revenue, Q1 2026")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 4  # target, expected, forecast, actual
    assert "East revenue, Q1 2026" in svg and f"known at position {head}" in svg
    converter = shutil.which("rsvg-convert")
    if converter:  # renders, when the tool is installed (it is on the development machines)
        png = tmp_path / "burnup.png"
        (tmp_path / "burnup.svg").write_text(svg)
        subprocess.run([converter, "-o", str(png), str(tmp_path / "burnup.svg")], check=True)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

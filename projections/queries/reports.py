"""Daily and weekly reports per member and per unit, as data, CSV and a burn-up chart in SVG.

A report covers one day (``2026-03-20``) or one ISO week (``2026-W12``) and is computed at a
cut: events recorded up to a log position, effective up to the end of the window (or ``at``,
the instant the report is asked for, if the window is not over yet). It reads the progress
and pipeline projections and the alert tables, writes nothing and never reads the clock.

What it counts, for a member (their own facts) or a unit (the facts of the members who were
in the unit or below it *when the fact happened*, as ``progress`` attributes them):

- activities logged in the window, per kind;
- stage changes: stages entered in the window other than a deal's first (so wins, losses and
  reopenings count), and how many distinct deals moved; attributed to the deal's owner then;
- deals won and lost in the window (state at the cut, as ``progress`` counts them), with their
  amounts per currency;
- tasks completed in the window, and tasks overdue at the end of it (open, due before);
- progress and pace of the targets of published plans whose period overlaps the window,
  measured at the end of the window (``progress`` with its member or unit filter);
- alerts open at the end of the window, as the alert runs recorded them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal
from uuid import UUID
from xml.sax.saxutils import escape

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import NotFound, ValidationError
from projections.folds.pipeline import LIVE as PIPELINE
from projections.folds.progress import LIVE as LEDGER
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, figures
from projections.measure.facts import ACTIVITY, LOST, WON, Bucket, Cell, tally
from projections.measure.organisation import Organisation
from projections.measure.series import Step, series
from projections.measure.targets import TargetHistory, cell, midnight
from projections.processes import alerts as alerts_module
from projections.processes.alerts import Alert, list_alerts
from projections.queries.analytics import check_at
from projections.queries.plans import find_plan
from projections.queries.progress import ProgressFilter, ProgressRow, progress

_DAY_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TWO: Final = Decimal("0.01")


@dataclass(frozen=True)
class ReportWindow:
    kind: Literal["daily", "weekly"]
    key: str
    start: datetime
    end: datetime  # exclusive


def report_window(period: str) -> ReportWindow:
    """``2026-03-20`` is a day, ``2026-W12`` an ISO week (UTC days)."""
    if isinstance(period, str) and _DAY_RE.fullmatch(period):
        try:
            day = date.fromisoformat(period)
        except ValueError:
            raise ValidationError("report.period", f"{period} is not a calendar day", "period") from None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return ReportWindow("daily", period, start, start + timedelta(days=1))
    parsed = v.Period.parse(period, "period") if isinstance(period, str) and "-W" in period else None
    if parsed is None or parsed.kind != "week":
        raise ValidationError("report.period", "period must be a day (2026-03-20) or an ISO week (2026-W12)", "period")
    return ReportWindow("weekly", period, parsed.start_at, parsed.end_at)


@dataclass(frozen=True)
class Report:
    """One member's or unit's day or week, stamped with the cut it was computed at."""

    kind: str  # daily | weekly
    subject_type: str  # member | unit
    subject_id: UUID
    name: str
    period: str
    window_start: datetime
    window_end: datetime
    position: int
    as_of: datetime  # the cut's effective time: the window's end, or ``at`` while the window runs
    activities: dict[str, int]  # per kind, every kind listed
    activities_total: int
    stage_changes: int
    deals_moved: int
    won_count: int
    won_amount: dict[str, Decimal]  # per currency
    lost_count: int
    lost_amount: dict[str, Decimal]
    tasks_done: int
    tasks_overdue: int
    targets: list[ProgressRow]
    open_alerts: list[Alert]


def member_report(conn: Connection, *, member_id: UUID, period: str, at: datetime, position: int,
                  config: MeasureConfig = MeasureConfig()) -> Report:
    """A member's day or week: what they logged, moved, won, lost and finished, and where their targets stand."""
    return _report(conn, "member", member_id, report_window(period), at, position, config)


def unit_report(conn: Connection, *, unit_id: UUID, period: str, at: datetime, position: int,
                config: MeasureConfig = MeasureConfig()) -> Report:
    """A unit's day or week (its subtree, each fact counted where its member was then)."""
    return _report(conn, "unit", unit_id, report_window(period), at, position, config)


def _report(conn: Connection, subject: str, subject_id: UUID, window: ReportWindow, at: datetime, position: int,
            config: MeasureConfig) -> Report:
    check_at(Cut(position), at)
    if at <= window.start:
        raise ValidationError("report.not_started", "the report's window has not begun at `at`", "at")
    as_of = min(at, window.end)
    cut = Cut(position, as_of)
    org = Organisation(conn, cut)
    if subject == "member":
        name = org.member_name(subject_id)
        if name is None:
            raise NotFound("member", subject_id, "member_id")

        def mine(member: UUID, when: datetime) -> bool:
            return member == subject_id  # a member's own facts, wherever they were
    else:
        name = org.tree.name(subject_id)
        if name is None:
            raise NotFound("unit", subject_id, "unit_id")
        within = org.tree.subtree(subject_id)

        def mine(member: UUID, when: datetime) -> bool:
            return org.unit_of(member, when) in within

    start, end = window.start, window.end
    # Activities, wins and losses are facts: counted by the core, placed where their member was then.
    counted = tally(conn, [Cell("report", (ACTIVITY, WON, LOST), subject_id, start, end, currency="")], cut,
                    at=as_of)["report"]
    kinds = {kind: b.count for kind, b in counted.details(ACTIVITY).items()}

    # The deal's row written by the event that entered the stay says who owned it then.
    s, d = PIPELINE.stays.c, LEDGER.deals.c
    moves = conn.execute(
        sa.select(s.deal_id, s.entered_at, d.owner_id)
        .join(LEDGER.deals, sa.and_(d.deal_id == s.deal_id, d.position == s.entered_position))
        .where(s.entered_position <= cut.position, s.entered_at >= start, s.entered_at < end,
               s.entered_at <= as_of, d.last_stage_change_at.is_not(None)))
    moved = [r.deal_id for r in moves if mine(r.owner_id, r.entered_at)]

    t = PIPELINE.tasks.c
    done = overdue = 0
    for row in conn.execute(sa.select(t.assignee_id, t.status, t.due, t.completed_at).where(
            cut.where(PIPELINE.tasks), sa.or_(
                sa.and_(t.status == "done", t.completed_at >= start, t.completed_at < end),
                sa.and_(t.status == "open", t.due < as_of.date())))):
        if row.status == "done":
            done += mine(row.assignee_id, row.completed_at)
        else:
            overdue += mine(row.assignee_id, as_of)

    return Report(
        kind=window.kind, subject_type=subject, subject_id=subject_id, name=name, period=window.key,
        window_start=start, window_end=end, position=position, as_of=as_of,
        activities={kind: kinds.get(kind, 0) for kind in v.ACTIVITY_KINDS}, activities_total=sum(kinds.values()),
        stage_changes=len(moved), deals_moved=len(set(moved)),
        won_count=counted.of(WON).count, won_amount=_per_currency(counted.details(WON)),
        lost_count=counted.of(LOST).count, lost_amount=_per_currency(counted.details(LOST)),
        tasks_done=done, tasks_overdue=overdue,
        targets=_targets(conn, cut, subject, subject_id, window, config),
        open_alerts=_open_alerts(conn, subject, subject_id, as_of),
    )


def _per_currency(by_currency: dict[str, Bucket]) -> dict[str, Decimal]:
    return {c: (Decimal(by_currency[c].cents_any) / 100).quantize(_TWO) for c in sorted(by_currency)}


def _targets(conn: Connection, cut: Cut, subject: str, subject_id: UUID, window: ReportWindow,
             config: MeasureConfig) -> list[ProgressRow]:
    p = LEDGER.plans.c
    published = set(conn.execute(sa.select(p.plan_id).where(cut.where(LEDGER.plans), p.status == "published"))
                    .scalars())
    filters = ProgressFilter(member_id=subject_id) if subject == "member" else ProgressFilter(unit_id=subject_id)
    assert cut.as_of is not None
    rows = progress(conn, cut=cut, now=cut.as_of, filters=filters, config=config).rows
    return [r for r in rows if r.plan_id in published and r.window_start < window.end and window.start < r.window_end]


def _open_alerts(conn: Connection, subject: str, subject_id: UUID, as_of: datetime) -> list[Alert]:
    # The alert tables exist once alerts.setup ran; a deployment without alerts still gets its reports.
    if not sa.inspect(conn).has_table(alerts_module.alerts_table.name):
        return []
    if subject == "member":
        return list_alerts(conn, owner_id=subject_id, open_at=as_of, limit=1000)
    return list_alerts(conn, unit_id=subject_id, open_at=as_of, limit=1000)


# --- CSV ------------------------------------------------------------------------------------------


def report_csv(report: Report) -> str:
    """The report as tidy CSV: one figure per line (``section,item,measure,currency,value``)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(("section", "item", "measure", "currency", "value"))
    for measure, value in (("kind", report.kind), ("subject_type", report.subject_type),
                           ("subject_id", report.subject_id), ("name", report.name), ("period", report.period),
                           ("window_start", report.window_start.isoformat()),
                           ("window_end", report.window_end.isoformat()), ("position", report.position),
                           ("as_of", report.as_of.isoformat())):
        w.writerow(("report", "", measure, "", value))
    for kind, count in report.activities.items():
        w.writerow(("activities", kind, "count", "", count))
    w.writerow(("activities", "total", "count", "", report.activities_total))
    w.writerow(("deals", "stage_changes", "count", "", report.stage_changes))
    w.writerow(("deals", "moved", "count", "", report.deals_moved))
    for outcome, count, amounts in (("won", report.won_count, report.won_amount),
                                    ("lost", report.lost_count, report.lost_amount)):
        w.writerow(("deals", outcome, "count", "", count))
        for currency, amount in amounts.items():
            w.writerow(("deals", outcome, "amount", currency, amount))
    w.writerow(("tasks", "done", "count", "", report.tasks_done))
    w.writerow(("tasks", "overdue", "count", "", report.tasks_overdue))
    for row in report.targets:
        item = f"{row.target_id}"
        w.writerow(("target", item, "metric", "", row.metric))
        w.writerow(("target", item, "period", "", row.period))
        money = row.currency if row.metric in v.MONEY_METRICS else ""
        for measure, figure in (("committed", row.committed), ("actual", row.actual),
                                ("expected_to_date", row.expected_to_date), ("forecast", row.forecast)):
            if figure is not None:
                w.writerow(("target", item, measure, money, figure))
        for measure, ratio in (("attainment", row.attainment), ("pace", row.pace)):
            if ratio is not None:
                w.writerow(("target", item, measure, "", ratio))
        w.writerow(("target", item, "pace_status", "", row.pace_status))
    for alert in report.open_alerts:
        w.writerow(("alert", alert.id, alert.kind, "", alert.message))
    return out.getvalue()


# --- the burn-up chart ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BurnupPoint:
    day: date
    as_of: datetime  # the end of the day (or the series' ``until``)
    committed: Decimal
    stretch: Decimal | None
    expected_to_date: Decimal
    actual: Decimal
    forecast: Decimal | None


@dataclass(frozen=True)
class Burnup:
    """A target's attainment and forecast day by day, each day as it stood at its end, known at ``position``."""

    target_id: UUID
    metric: str
    period: str
    currency: str
    position: int
    until: datetime
    points: list[BurnupPoint]


def burnup(conn: Connection, *, target_id: UUID, position: int, until: datetime,
           config: MeasureConfig = MeasureConfig()) -> Burnup:
    """The burn-up series of one target over its window's days up to ``until``: each day as it stood at its end.

    The facts are read once for every day (``projections.measure.series``); each day's figures
    are the ones ``/progress`` reports at that day's cut.
    """
    check_at(Cut(position), until)
    t = LEDGER.targets.c
    row = conn.execute(sa.select(t.plan_id, t.period, t.metric).where(Cut(position).where(LEDGER.targets),
                                                                      t.target_id == target_id)).first()
    if row is None:
        raise NotFound("target", target_id, "target_id")
    plan = find_plan(conn, row.plan_id, position)
    history = TargetHistory(conn, plan_id=row.plan_id, position=position, metric=row.metric, period=row.period)
    rows = history.rows[target_id]
    start, end = midnight(rows[0].period_start), midnight(rows[0].period_end)
    days: list[tuple[date, datetime]] = []
    day = start
    while day < end and day < until:
        days.append((day.date(), min(day + timedelta(days=1), until)))
        day += timedelta(days=1)
    steps = [Step(position, as_of) for _, as_of in days]
    target = next(x for x in history.at(Cut(position)) if x.target_id == target_id) if steps else None
    counted = series(conn, [cell(target, plan.currency)], steps)[str(target_id)] if target else []
    points: list[BurnupPoint] = []
    for (day_, as_of), day_tally in zip(days, counted, strict=True):
        in_force = [x for x in history.at(Cut(position, as_of)) if x.target_id == target_id]
        if not in_force:  # the target may have been set after the period began
            continue
        f = figures(row.metric, in_force[0].committed, in_force[0].stretch, day_tally, start, end, as_of, config)
        points.append(BurnupPoint(day_, as_of, f.committed, f.stretch, f.expected_to_date, f.actual, f.forecast))
    return Burnup(target_id, row.metric, row.period, plan.currency, position, until, points)


_COLOURS: Final = {"target": "#444444", "stretch": "#999999", "expected": "#8c8c8c", "actual": "#1f6fb4",
                   "forecast": "#e07b00"}


def burnup_svg(series: Burnup, *, width: int = 760, height: int = 400, title: str | None = None) -> str:
    """A hand-drawn SVG burn-up: committed (and stretch) target, expected to date, actual and forecast."""
    period = v.Period.parse(series.period)
    left, right, top, bottom = 78, 20, 56, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    total = (period.end_at - period.start_at).total_seconds()
    values = [Decimal(0)]
    for p in series.points:
        values += [p.committed, p.actual, *(x for x in (p.stretch, p.forecast) if x is not None)]
    step = _nice_step(max(values) / 5 if max(values) > 0 else Decimal(1))
    top_value = step * (int(max(values) / step) + 1)

    def x(when: datetime) -> float:
        return left + plot_w * (when - period.start_at).total_seconds() / total

    def y(value: Decimal) -> float:
        return top + plot_h * (1 - float(value / top_value))

    def line(points: list[tuple[float, float]], colour: str, dash: str = "", stroke: float = 2) -> str:
        if not points:
            return ""
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        return (f'<polyline fill="none" stroke="{colour}" stroke-width="{stroke}"{dashed} '
                f'stroke-linejoin="round" points="{coords}"/>')

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">'
        f'{escape(title or f"{series.metric} {series.period}")}</text>',
        f'<text x="{width - right}" y="20" text-anchor="end" fill="#666666">known at position {series.position}'
        f'{escape(f" · {series.currency}" if series.metric in v.MONEY_METRICS and series.currency else "")}</text>',
    ]
    # Horizontal grid and the value axis.
    tick = Decimal(0)
    while tick <= top_value:
        ty = y(tick)
        parts.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{width - right}" y2="{ty:.1f}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#555555">{_label(tick)}</text>')
        tick += step
    # Month (or, for short periods, week) ticks on the time axis.
    day = period.start
    while day < period.end:
        if (period.kind in ("week", "month") and day.weekday() == 0) or day.day == 1 or day == period.start:
            tx = x(datetime(day.year, day.month, day.day, tzinfo=UTC))
            parts.append(f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{top + plot_h}" stroke="#f0f0f0"/>')
            parts.append(f'<text x="{tx:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#555555">'
                         f'{day.strftime("%d %b")}</text>')
        day += timedelta(days=1)
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#333333"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333333"/>')

    origin = (x(period.start_at), y(Decimal(0)))
    target: list[tuple[float, float]] = []
    stretch: list[tuple[float, float]] = []
    for i, p in enumerate(series.points):
        begin = period.start_at if i == 0 else series.points[i - 1].as_of
        target += [(x(begin), y(p.committed)), (x(p.as_of), y(p.committed))]  # steps: revisions show as jumps
        if p.stretch is not None:
            stretch += [(x(begin), y(p.stretch)), (x(p.as_of), y(p.stretch))]
    if series.points:  # the plan runs to the end of the period
        last = series.points[-1]
        target.append((x(period.end_at), y(last.committed)))
        if last.stretch is not None:
            stretch.append((x(period.end_at), y(last.stretch)))
    parts.append(line(target, _COLOURS["target"], "6 4", 1.5))
    parts.append(line(stretch, _COLOURS["stretch"], "2 4", 1.5))
    parts.append(line([origin] + [(x(p.as_of), y(p.expected_to_date)) for p in series.points],
                      _COLOURS["expected"], "1 3", 1.5))
    parts.append(line([(x(p.as_of), y(p.forecast)) for p in series.points if p.forecast is not None],
                      _COLOURS["forecast"], "5 3"))
    parts.append(line([origin] + [(x(p.as_of), y(p.actual)) for p in series.points], _COLOURS["actual"], "", 2.5))

    legend = [("target", "committed target", "6 4"), ("expected", "expected to date", "1 3"),
              ("actual", "actual", ""), ("forecast", "forecast", "5 3")]
    if stretch:
        legend.insert(1, ("stretch", "stretch target", "2 4"))
    lx = left
    for key, text, dash in legend:
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{lx}" y1="38" x2="{lx + 22}" y2="38" stroke="{_COLOURS[key]}" stroke-width="2.5"'
                     f'{dashed}/>')
        parts.append(f'<text x="{lx + 27}" y="42">{escape(text)}</text>')
        lx += 40 + 6 * len(text)
    parts.append("</svg>")
    return "\n".join(p for p in parts if p) + "\n"


def _nice_step(rough: Decimal) -> Decimal:
    """1, 2, 2.5 or 5 times a power of ten: gridlines people can read."""
    exponent = rough.adjusted()
    base = Decimal(1).scaleb(exponent)
    for factor in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if base * factor >= rough:
            return base * factor
    return base * 10


def _label(value: Decimal) -> str:
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}".rstrip("0")

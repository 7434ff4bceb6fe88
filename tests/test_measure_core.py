"""The measurement core against a plain replay of the log, and its two strategies against each other.

``tally`` (one cut, counted in the database) must equal a brute-force fold of the filtered log
for every kind of cell — members, units (their whole subtree, each fact placed where its member
was when it happened), narrowed cells — and ``series`` (many cuts, each row read once) must
equal ``tally`` at every one of its steps, on either clock.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from uuid import UUID

import pytest

from domain.application import SalesPlanning
from domain.deal import Activity, Deal
from domain.organisation import Unit
from domain.values import OPEN_STAGES, Period
from projections.engine import ProjectionEngine
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, actual_of, elapsed_share, figures, weighted_of
from projections.measure.facts import METRIC_KINDS, Cell, Tally, tally
from projections.measure.series import Step, series
from projections.measure.targets import midnight
from projections.registry import all_projections
from tests.history_generator import GeneratedHistory, generate_history
from tests.test_time_travel import Replayed, replay

METRICS = ("revenue", "deals_won", "new_deals", "activities", "win_rate", "average_order_value")


def _cells(history: GeneratedHistory, rnd: random.Random) -> list[Cell]:
    windows = [Period.parse(k) for k in ("2025", "2025-Q1", "2025-Q2", "2025-Q3", "2025-03", "2025-W20")]
    cells = []
    owners = [*history.units, *history.members]
    for i in range(60):
        window = rnd.choice(windows)
        metric = rnd.choice(METRICS)
        narrowing = rnd.choice([{}, {}, {"product_line": "GTX"}, {"segment": "smb"}, {"region": "US"}])
        cells.append(Cell(key=f"c{i}", kinds=METRIC_KINDS[metric], owner_id=rnd.choice(owners),
                          start=window.start_at, end=window.end_at, currency="EUR", **narrowing))
    return cells


def _expected(r: Replayed, cell: Cell, at: datetime) -> dict[str, Fraction | None]:
    """Actual and weighted pipeline of every metric the cell's kinds feed, by brute force."""
    units = {k: a for k, a in r.aggregates.items() if isinstance(a, Unit)}
    deals = [a for a in r.aggregates.values() if isinstance(a, Deal)]
    activities = [a for a in r.aggregates.values() if isinstance(a, Activity)]

    def unit_of(member: UUID, when: datetime) -> UUID:
        history = r.memberships[member]
        chosen = history[0][1]
        for effective, unit in history:
            if effective <= when:
                chosen = unit
        return chosen

    def counts_for(member: UUID, when: datetime) -> bool:
        if member == cell.owner_id:
            return True
        unit: UUID | None = unit_of(member, when)
        seen = set()
        while unit is not None and unit in units and unit not in seen:
            if unit == cell.owner_id:
                return True
            seen.add(unit)
            unit = units[unit].parent_id
        return False

    def narrowed(line: str | None, region: str | None, segment: str | None) -> bool:
        return all(want is None or want == have for want, have in (
            (cell.product_line, line), (cell.region, region), (cell.segment, segment)))

    def inside(when: datetime | None) -> bool:
        return when is not None and cell.start <= when < cell.end

    won = [d for d in deals if d.stage == "won" and inside(r.closed_at.get(d.id))
           and counts_for(d.owner_id, r.closed_at[d.id]) and narrowed(d.product_line, d.region, d.segment)]
    lost = [d for d in deals if d.stage == "lost" and inside(r.closed_at.get(d.id))
            and counts_for(d.owner_id, r.closed_at[d.id]) and narrowed(d.product_line, d.region, d.segment)]
    opened = [d for d in deals if inside(r.opened_at[d.id]) and counts_for(r.opened_by[d.id], r.opened_at[d.id])
              and narrowed(d.product_line, d.region, d.segment)]
    open_due = [d for d in deals if d.stage in OPEN_STAGES and cell.start.date() <= d.expected_close < cell.end.date()
                and counts_for(d.owner_id, at) and narrowed(d.product_line, d.region, d.segment)]
    logged = [a for a in activities if inside(a.last_effective_at) and counts_for(a.member_id, a.last_effective_at)
              and narrowed(None, None, None)]
    p = {k: Fraction(x) for k, x in MeasureConfig().stage_probabilities.items()}
    eur_won = [Fraction(d.amount) for d in won if d.currency == "EUR"]
    return {
        "revenue": sum(eur_won, Fraction(0)),
        "deals_won": Fraction(len(won)),
        "new_deals": Fraction(len(opened)),
        "activities": Fraction(len(logged)),
        "win_rate": Fraction(len(won), len(won) + len(lost)) if won or lost else Fraction(0),
        "average_order_value": sum(eur_won, Fraction(0)) / len(eur_won) if eur_won else Fraction(0),
        "weighted_revenue": sum((Fraction(d.amount) * p[d.stage] for d in open_due if d.currency == "EUR"),
                                Fraction(0)),
        "weighted_deals": sum((p[d.stage] for d in open_due), Fraction(0)),
    }


def _measured(counted: Tally) -> dict[str, Fraction | None]:
    probabilities = MeasureConfig().stage_probabilities
    return {
        **{metric: actual_of(metric, counted) for metric in METRICS},
        "weighted_revenue": weighted_of("revenue", counted, probabilities),
        "weighted_deals": weighted_of("deals_won", counted, probabilities),
    }


def _relevant(cell: Cell, figures: dict[str, Fraction | None]) -> dict[str, Fraction | None]:
    keep = {m for m in METRICS if set(METRIC_KINDS[m]) <= set(cell.kinds)}
    if "open" in cell.kinds:
        keep |= {"weighted_revenue", "weighted_deals"}
    return {k: figures[k] for k in sorted(keep)}


def _projected(app: SalesPlanning, seed: int, commands: int) -> tuple[GeneratedHistory, ProjectionEngine]:
    history = generate_history(app, seed=seed, commands=commands)
    engine = ProjectionEngine(app, all_projections(), batch_size=41)
    engine.setup()
    engine.catch_up()
    return history, engine


def test_tally_at_any_cut_equals_a_replay_of_the_log_for_members_units_and_narrowed_cells(app: SalesPlanning) -> None:
    history, engine = _projected(app, seed=21, commands=320)
    head = engine.head()
    rnd = random.Random(8)
    cells = _cells(history, rnd)
    first, last = history.effective_times[0], history.effective_times[-1]
    cuts: list[tuple[int, datetime | None]] = [(head, None)]
    for _ in range(6):
        as_of = first + timedelta(seconds=rnd.uniform(0, (last - first).total_seconds()))
        cuts.append((rnd.randint(1, head), rnd.choice([None, as_of])))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    nonzero = 0
    with app.database.engine.connect() as conn:
        for position, as_of in cuts:
            at = as_of or now
            counted = tally(conn, cells, Cut(position, as_of), at=at)
            r = replay(app, position, as_of)
            for c in cells:
                want = _relevant(c, _expected(r, c, at))
                assert _relevant(c, _measured(counted[c.key])) == want, (c, position, as_of)
                nonzero += any(want.values())
    assert nonzero > 60  # the comparison is exercised: many cells count something


@pytest.mark.parametrize("known", ["now", "then"])
def test_a_series_equals_tally_at_each_of_its_steps(app: SalesPlanning, known: str) -> None:
    history, engine = _projected(app, seed=4, commands=300)
    head = engine.head()
    rnd = random.Random(2)
    cells = _cells(history, rnd)
    start = midnight(history.effective_times[0].date())
    with app.database.engine.connect() as conn:
        steps = []
        days = range(0, 240, 3)
        for i, day in enumerate(days):
            as_of = start + timedelta(days=day, hours=23, minutes=59)
            # "Then": the log as it had grown by each step (the history was recorded all at once, so its
            # recorded times cannot say; positions growing with the steps are the same kind of series).
            position = head if known == "now" else head * (i + 1) // len(days)
            steps.append(Step(position, as_of))
        got = series(conn, cells, steps)
        checked = 0
        for i, step in enumerate(steps):
            want = tally(conn, cells, Cut(step.position, step.as_of), at=step.as_of)
            for c in cells:
                assert _measured(got[c.key][i]) == _measured(want[c.key]), (c, step)
                checked += bool(want[c.key].buckets)
    assert checked > 200


def test_elapsed_share_is_exact_to_the_microsecond() -> None:
    q2 = Period.parse("2026-Q2")
    at = datetime(2026, 5, 15, tzinfo=UTC)  # 30 days of April and 14 of May: 44 of the quarter's 91
    share = elapsed_share(q2.start_at, q2.end_at, at)
    assert share == Fraction(44, 91)
    # 120,000 × 44/91 = 5,280,000/91 = 58,021.978… → 58,021.98 (floats rounded to 6 places gave 58,021.92).
    standing = figures("revenue", Decimal(120_000), None, Tally(), q2.start_at, q2.end_at, at, MeasureConfig())
    assert standing.expected_to_date == Decimal("58021.98")
    assert standing.pace == Decimal(0) and standing.pace_status == "behind"

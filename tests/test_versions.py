"""Plan versions: how FY2025 evolved from the v1 baseline to the March adjustment (v2), why,
and what each version asked of reality.

The story is the audit suite's (``tests.test_audit.tell_story``): v1 splits East's 4.8M year
into four quarters of 1.2M; before v2 Q2 is cut to 1.0M ("key account slipped") and its
stretch to 1.1M ("no upside left in Q2"), Q4 is removed and Ann gets a new-deals target.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.application import SalesPlanning
from domain.plan import Plan
from domain.values import ADDITIVE_METRICS, Period, Scope
from projections.folds import versions as version_folds
from projections.folds.versions import (
    ADDED,
    DECOMPOSED,
    REMOVED,
    REVISED,
    VersionTarget,
    evolve_working,
    snapshot,
    working_changes,
)
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig
from projections.measure.organisation import Span, Tree, UnitNode
from projections.measure.targets import Rollup, Target, from_period
from projections.queries import versions
from projections.queries.progress import ProgressFilter, progress, progress_rows
from projections.queries.versions import (
    MetricTotal,
    VersionNotFound,
    compare_versions,
    compare_with_actuals,
    list_versions,
    measured,
    rollup_totals,
    version_tree,
)
from tests.history_generator import generate_history
from tests.test_audit import MARIA, at, caught_up, dump, log_of, projected, tell_story

NOW = datetime(2026, 1, 15, tzinfo=UTC)
D = Decimal


# --- pure folds, no database ------------------------------------------------------------------


def plan_until_split() -> tuple[Plan, list[Any], UUID, list[UUID], UUID]:
    """FY2025 with East's year split into quarters: the plan and its target events so far."""
    east = uuid4()
    plan = Plan.draft(id=uuid4(), name="FY2025", span="2025", currency="EUR", unit_id=east, actor=MARIA,
                      effective_at=at(1, 3))
    year = uuid4()
    plan.set_target(target_id=year, metric="revenue", period="2025", scope=Scope(unit_id=east),
                    committed="4800000", stretch="5200000", actor=MARIA, effective_at=at(1, 6))
    quarters = [uuid4() for _ in range(4)]
    plan.decompose(parent_id=year, by="period", parts=[f"2025-Q{q}" for q in range(1, 5)], child_ids=quarters,
                   actor=MARIA, effective_at=at(1, 7))
    return plan, list(plan.collect_events())[1:], year, quarters, east


def plan_events() -> tuple[list[Any], UUID, list[UUID], UUID]:
    plan, events, year, quarters, east = plan_until_split()
    plan.publish(note="baseline", actor=MARIA, effective_at=at(1, 10))
    plan.revise_target(target_id=quarters[1], committed="1000000", absorb="parent", reason="key account slipped",
                       actor=MARIA, effective_at=at(3, 1))
    plan.remove_target(target_id=quarters[3], mode="subtree", reason="Q4 moves to the FY2026 plan", actor=MARIA,
                       effective_at=at(3, 2))
    plan.publish(actor=MARIA, effective_at=at(3, 31))
    return [*events, *plan.collect_events()], year, quarters, east


def test_the_working_tree_follows_every_target_event() -> None:
    events, year, quarters, east = plan_events()
    tree: dict[UUID, VersionTarget] = {}
    published = []
    for event in events:
        if isinstance(event, Plan.Published):
            published.append(snapshot(tree))
        tree = evolve_working(tree, event)
    v1, v2 = published
    assert [(t.period, t.committed, t.stretch, t.parent_id) for t in v1] == [
        ("2025", 4800000, 5200000, None), *[(f"2025-Q{q}", Decimal("1200000.00"), Decimal("1300000.00"), year)
                                           for q in range(1, 5)]]
    assert all(t.metric == "revenue" and t.unit_id == east and t.member_id is None for t in v1)
    # The year follows its quarters: 4,800,000 − 200,000 (Q2) − 1,200,000 (Q4 removed with it).
    assert [(t.period, t.committed) for t in v2] == [
        ("2025", D(3400000)), ("2025-Q1", D(1200000)), ("2025-Q2", D(1000000)), ("2025-Q3", D(1200000))]
    assert sum(t.committed for t in v2[1:]) == v2[0].committed
    assert quarters[3] not in tree


def test_each_event_says_what_it_did_to_which_target() -> None:
    events, year, quarters, _ = plan_events()
    set_year, split, _, revise, _, _ = events
    tree = evolve_working({}, set_year)
    assert [(c.kind, c.target.target_id, c.before_committed, c.after_committed)
            for c in working_changes({}, set_year)] == [(ADDED, year, None, D(4800000))]
    made = working_changes(tree, split)
    assert [(c.kind, c.target.target_id) for c in made] == [(DECOMPOSED, year)] + [(ADDED, q) for q in quarters]
    assert made[0].before_committed == made[0].after_committed == 4800000
    assert {c.target.metric for c in made} == {"revenue"}
    tree = evolve_working(tree, split)
    revised, rolled_up = working_changes(tree, revise)
    assert (revised.kind, revised.before_committed, revised.after_committed) == (REVISED, D(1200000), D(1000000))
    assert (revised.before_stretch, revised.after_stretch) == (D(1300000), D(1300000))
    assert revised.target.committed == 1000000
    # The same event moves the year with it: its upside stays, only the committed value follows Q2.
    assert (rolled_up.kind, rolled_up.target.target_id) == ("rolled_up", year)
    assert (rolled_up.before_committed, rolled_up.after_committed) == (D(4800000), D(4600000))
    assert (rolled_up.before_stretch, rolled_up.after_stretch) == (D(5200000), D(5200000))
    # Removing the year removes its quarters with it: one change per target, values as they were.
    plan, (set_again, split_again), year, quarters, _ = plan_until_split()
    tree = evolve_working(evolve_working({}, set_again), split_again)
    plan.remove_target(target_id=year, reason="replanned", actor=MARIA, effective_at=at(3, 3))
    (whole,) = plan.collect_events()
    gone = working_changes(tree, whole)
    assert [(c.kind, c.target.target_id, c.after_committed) for c in gone] == [
        (REMOVED, t, None) for t in (year, *quarters)]
    assert evolve_working(tree, whole) == {}
    assert len(tree) == 5  # the fold never changes its input


def test_a_fold_on_an_unknown_target_fails_loudly() -> None:
    events, *_ = plan_events()
    with pytest.raises(KeyError):
        working_changes({}, events[1])


def test_totals_follow_the_roll_up_rule_and_ignore_ratios() -> None:
    company, team = uuid4(), uuid4()
    ann, bob = uuid4(), uuid4()
    plan = uuid4()
    tree = Tree({company: UnitNode(company, None, "Company", True), team: UnitNode(team, company, "Team", True)})
    spans = {ann: [Span(team, None, None)], bob: [Span(team, None, None)]}

    def target(period: str, committed: int, parent: Target | None = None, metric: str = "revenue",
               unit: UUID | None = company, member: UUID | None = None, stretch: int | None = None) -> Target:
        return from_period(target_id=uuid4(), plan_id=plan, parent_id=parent.target_id if parent else None,
                           metric=metric, period=period, unit_id=None if member else unit, member_id=member,
                           product_line=None, region=None, segment=None, committed=Decimal(committed),
                           stretch=None if stretch is None else Decimal(stretch))

    year = target("2025", 400, stretch=500)
    q1 = target("2025-Q1", 100, year)
    q1_team = target("2025-Q1", 100, q1, unit=team)  # the company's Q1 split to its team: the company's own counts
    q1_ann = target("2025-Q1", 60, q1_team, member=ann)  # and the team's split by rep: counted once, as Q1
    q1_bob = target("2025-Q1", 40, q1_team, member=bob)
    q2_ann = target("2025-Q2", 5, member=ann, metric="deals_won")  # no company or team Q2 target: the reps cover it
    q2_bob = target("2025-Q2", 3, member=bob, metric="deals_won")
    win_rate = target("2025", 0, metric="win_rate")
    before = [year, q1, q1_team, q1_ann, q1_bob, q2_ann, q2_bob, win_rate]
    q2_bob_cut = replace(q2_bob, committed=Decimal(2))
    after = [year, q1, q1_team, q1_ann, q1_bob, q2_ann, q2_bob_cut, win_rate]
    y, q1p, q2p = Period.parse("2025"), Period.parse("2025-Q1"), Period.parse("2025-Q2")
    # By hand: the year is 400 (stretch 500); Q1 is the company's own 100 (its children never add to it);
    # deals won Q2 is the reps' 5 + 3 = 8, then 5 + 2 = 7 (no target above them for Q2).
    assert rollup_totals(company, before, after, tree, spans) == [
        MetricTotal("revenue", "2025", y.start_at, y.end_at, Decimal(400), Decimal(400), Decimal(0), Decimal(500),
                    Decimal(500), Decimal(0)),
        MetricTotal("revenue", "2025-Q1", q1p.start_at, q1p.end_at, Decimal(100), Decimal(100), Decimal(0),
                    Decimal(100), Decimal(100), Decimal(0)),
        MetricTotal("deals_won", "2025-Q2", q2p.start_at, q2p.end_at, Decimal(8), Decimal(7), Decimal(-1), Decimal(8),
                    Decimal(7), Decimal(-1)),
    ]
    # The team's own Q1 stands for it: 100, not the reps' 60 + 40 on top.
    assert [t.committed for t in Rollup(before, tree, spans).covering(("revenue", q1p.start_at, q1p.end_at),
                                                                       unit_id=team)] == [Decimal(100)]


# --- the story on SQLite and PostgreSQL -------------------------------------------------------


def connect(app: SalesPlanning) -> Any:
    return app.database.engine.connect()


def test_each_publication_freezes_the_tree_and_the_list_knows_when(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    caught_up(engine)
    with connect(app) as conn:
        v1, v2 = list_versions(conn, s.plan)
        assert [(v.version, v.note, v.actor, v.effective_at) for v in (v1, v2)] == [
            (1, "baseline", MARIA, at(1, 10)), (2, "March rolling adjustment", MARIA, at(3, 31))]
        assert v1.position < v2.position
        first = version_tree(conn, s.plan, 1)
        assert first.version == v1
        assert [(t.target_id, t.committed, t.stretch) for t in first.targets] == [
            (s.year, D(4800000), D(5200000)), *[(q, D(1200000), D(1300000)) for q in s.quarters]]
        second = version_tree(conn, s.plan, 2)
        # The year: 4,800,000 − 200,000 − 1,200,000; its upside 5,200,000 − 100,000 (Q4's) − 200,000 (Q2's).
        assert [(t.target_id, t.metric, t.period, t.committed, t.stretch) for t in second.targets] == [
            (s.year, "revenue", "2025", D(3400000), D(3700000)),
            (s.quarters[0], "revenue", "2025-Q1", D(1200000), D(1300000)),
            (s.quarters[1], "revenue", "2025-Q2", D(1000000), D(1100000)),
            (s.quarters[2], "revenue", "2025-Q3", D(1200000), D(1300000)),
            (s.new_deals, "new_deals", "2025-Q3", D(30), None),
        ]
        assert second.targets[-1].member_id == s.ann and second.targets[-1].unit_id is None
        # As known at a position: v2 did not exist yet just before it was published.
        assert list_versions(conn, s.plan, position=v2.position - 1) == [v1]
        assert list_versions(conn, s.plan, position=v2.position) == [v1, v2]
        assert list_versions(conn, s.plan, position=v1.position - 1) == []
        assert version_tree(conn, s.plan, 1, position=v1.position) == first
        with pytest.raises(VersionNotFound):
            version_tree(conn, s.plan, 2, position=v2.position - 1)
        with pytest.raises(VersionNotFound):
            version_tree(conn, s.plan, 3)
        assert list_versions(conn, uuid4()) == []


def test_v1_against_v2_lists_what_moved_and_the_reasons_in_between(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    caught_up(engine)
    with connect(app) as conn:
        v1, v2 = list_versions(conn, s.plan)
        diff = compare_versions(conn, s.plan, 1, 2, position=engine.head())
    assert [t.target_id for t in diff.added] == [s.new_deals]
    assert [(t.target_id, t.committed) for t in diff.removed] == [(s.quarters[3], D(1200000))]
    year, q2 = diff.changed
    assert (year.target.target_id, year.before_committed, year.after_committed, year.committed_delta) == (
        s.year, D(4800000), D(3400000), D(-1400000))
    assert (year.before_stretch, year.after_stretch, year.stretch_delta) == (D(5200000), D(3700000), D(-1500000))
    assert year.reasons == ("key account slipped", "Q4 moves to the FY2026 plan", "no upside left in Q2")
    assert q2.target.target_id == s.quarters[1]
    assert (q2.before_committed, q2.after_committed, q2.committed_delta) == (D(1200000), D(1000000), D(-200000))
    assert (q2.before_stretch, q2.after_stretch, q2.stretch_delta) == (D(1300000), D(1100000), D(-200000))
    assert q2.reasons == ("key account slipped", "no upside left in Q2")
    assert [(c.kind, c.target_id, c.before_committed, c.after_committed, c.before_stretch, c.after_stretch, c.reason)
            for c in diff.changes] == [
        (REVISED, s.quarters[1], 1200000, 1000000, 1300000, 1300000, "key account slipped"),
        ("rolled_up", s.year, 4800000, 4600000, 5200000, 5200000, "key account slipped"),
        (REMOVED, s.quarters[3], 1200000, None, 1300000, None, "Q4 moves to the FY2026 plan"),
        ("rolled_up", s.year, 4600000, 3400000, 5200000, 3900000, "Q4 moves to the FY2026 plan"),
        (ADDED, s.new_deals, None, 30, None, None, "more pipeline for H2"),
        (REVISED, s.quarters[1], 1000000, 1000000, 1300000, 1100000, "no upside left in Q2"),
        ("rolled_up", s.year, 3400000, 3400000, 3900000, 3700000, "no upside left in Q2"),
    ]
    # Each revision or removal is one change with its effects: one position, the named target first.
    by_event = defaultdict(list)
    for c in diff.changes:
        by_event[c.position].append((c.seq, c.kind))
    assert list(by_event.values()) == [[(0, REVISED), (1, "rolled_up")], [(0, REMOVED), (1, "rolled_up")],
                                       [(0, ADDED)], [(0, REVISED), (1, "rolled_up")]]
    assert all(v1.position < c.position < v2.position and c.draft_of_version == 2 and c.actor == MARIA
               for c in diff.changes)
    assert [c.effective_at for c in diff.changes] == [at(3, 1), at(3, 1), at(3, 2), at(3, 2), at(3, 3), at(3, 5),
                                                      at(3, 5)]
    assert [(t.metric, t.period, t.from_committed, t.to_committed, t.committed_delta, t.stretch_delta)
            for t in diff.totals] == [
        ("revenue", "2025", D(4800000), D(3400000), D(-1400000), D(-1500000)),
        ("revenue", "2025-Q1", D(1200000), D(1200000), D(0), D(0)),
        ("revenue", "2025-Q2", D(1200000), D(1000000), D(-200000), D(-200000)),
        ("revenue", "2025-Q3", D(1200000), D(1200000), D(0), D(0)),
        ("revenue", "2025-Q4", D(1200000), D(0), D(-1200000), D(-1300000)),
        ("new_deals", "2025-Q3", D(0), D(30), D(30), D(30)),
    ]
    with connect(app) as conn:
        backwards = compare_versions(conn, s.plan, 2, 1, position=engine.head())
    assert (backwards.added, backwards.removed) == (diff.removed, diff.added)
    assert backwards.changes == diff.changes
    assert [(d.before_committed, d.after_committed) for d in backwards.changed] == [
        (D(3400000), D(4800000)), (D(1000000), D(1200000))]


def test_version_zero_is_the_empty_plan_the_baseline_was_built_from(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    caught_up(engine)
    with connect(app) as conn:
        diff = compare_versions(conn, s.plan, 0, 1, position=engine.head())
        with pytest.raises(VersionNotFound):
            compare_versions(conn, s.plan, 1, 3, position=engine.head())
    assert [t.target_id for t in diff.added] == [s.year, *s.quarters]
    assert diff.removed == []
    assert diff.changed == []
    assert [(c.kind, c.target_id, c.draft_of_version) for c in diff.changes] == [
        (ADDED, s.year, 1), (DECOMPOSED, s.year, 1), *[(ADDED, q, 1) for q in s.quarters]]


def test_changes_after_the_last_publication_prepare_the_next_version(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    app.revise_target(s.plan, target_id=s.quarters[2], committed="1400000", stretch="1500000", absorb="parent",
                      reason="a big tender in September", actor=MARIA, effective_at=at(4, 2))
    caught_up(engine)
    with connect(app) as conn:
        v2 = version_tree(conn, s.plan, 2)
        rows = conn.execute(version_folds.LIVE.working.select().where(version_folds.LIVE.working.c.plan_id == s.plan))
        working = {r.target_id: (r.committed, r.stretch) for r in rows}
        pending = versions.changes_between(conn, s.plan, v2.version.position, engine.head())
    # Q3 +200,000 with the same upside above it (100,000): the year goes to 3,600,000, upside 3,900,000.
    assert working == {t.target_id: (t.committed, t.stretch) for t in v2.targets} | {
        s.quarters[2]: (1400000, 1500000), s.year: (3600000, 3900000)}
    assert [(c.kind, c.reason, c.draft_of_version) for c in pending] == [
        (REVISED, "a big tender in September", 3), ("rolled_up", "a big tender in September", 3)]


def test_a_version_against_actuals_includes_removed_targets(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    caught_up(engine)
    with connect(app) as conn:
        now = compare_with_actuals(conn, s.plan, 1, cut=Cut(engine.head()), now=NOW)
        live = progress(conn, cut=Cut(engine.head()), now=NOW, filters=ProgressFilter(plan_id=s.plan))
        summer = compare_with_actuals(conn, s.plan, 1, cut=Cut(engine.head(), at(6, 30)), now=NOW)
        v1 = list_versions(conn, s.plan)[0]
        with pytest.raises(VersionNotFound):
            compare_with_actuals(conn, s.plan, 2, cut=Cut(v1.position), now=NOW)
    rows = {r.target.target_id: r for r in now.rows}
    assert [r.target.target_id for r in now.rows] == [s.year, *s.quarters]
    year, q1, q2, q3, q4 = (rows[t] for t in (s.year, *s.quarters))
    assert (year.actual, year.attainment, year.gap) == (D(800000), Decimal("0.1667"), D(4000000))
    assert (q1.actual, q1.attainment, q1.current) == (D(300000), Decimal("0.25"), True)
    # v1 asked 1.2M of Q2; the plan now asks 1.0M: attainment is against the version.
    assert (q2.target.committed, q2.current_committed, q2.current_stretch, q2.actual) == (
        D(1200000), D(1000000), D(1100000), D(0))
    assert q3.actual == 0
    # Q4 left the plan in March; what v1 asked of it is still measured.
    assert (q4.current, q4.current_committed, q4.current_attainment) == (False, None, None)
    assert (q4.actual, q4.attainment, q4.stretch_attainment, q4.gap) == (
        D(500000), Decimal("0.4167"), Decimal("0.3846"), D(700000))
    assert {r.target_id: r.actual for r in live.rows if r.target_id in rows} == {
        t: r.actual for t, r in rows.items() if r.current}
    summer_rows = {r.target.target_id: r.actual for r in summer.rows}
    assert summer_rows == {s.year: 300000, s.quarters[0]: 300000, s.quarters[1]: 0, s.quarters[2]: 0,
                           s.quarters[3]: 0}
    assert (summer.as_of, summer.effective_cut) == (at(6, 30), at(6, 30))


def test_removed_targets_are_measured_exactly_as_progress_measures_live_ones(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    caught_up(engine)
    for cut in (Cut(engine.head()), Cut(engine.head(), at(3, 31)), Cut(engine.head() - 3)):
        with connect(app) as conn:
            tree = version_tree(conn, s.plan, 2)
            live = progress(conn, cut=cut, now=NOW, filters=ProgressFilter(plan_id=s.plan))
            recomputed = {r.target_id: r for r in progress_rows(
                conn, [measured(s.plan, t) for t in tree.targets], cut=cut, at=cut.as_of or NOW, config=MeasureConfig())}
        assert live.rows
        assert {r.target_id: (r.actual, r.attainment, r.pace, r.gap) for r in live.rows} == {
            t: (r.actual, r.attainment, r.pace, r.gap) for t, r in recomputed.items()}


def fold_versions(app: SalesPlanning) -> dict[tuple[UUID, int], list[VersionTarget]]:
    trees: dict[UUID, dict[UUID, VersionTarget]] = defaultdict(dict)
    frozen = {}
    for envelope in log_of(app):
        e = envelope.event
        if isinstance(e, Plan.Published):
            frozen[(e.originator_id, e.version)] = snapshot(trees[e.originator_id])
        elif isinstance(e, version_folds.TARGET_EVENTS):
            trees[e.originator_id] = evolve_working(trees[e.originator_id], e)
    return frozen


def test_incremental_processing_and_a_rebuild_give_identical_rows(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app, step=lambda: caught_up(engine))
    tables = version_folds.LIVE.tables
    live = dump(app, tables)
    assert {len(rows) for rows in live.values()} >= {2, 10}
    engine.rebuild("plan_version")
    assert dump(app, tables) == live
    with connect(app) as conn:
        assert {(s.plan, n): version_tree(conn, s.plan, n).targets for n in (1, 2)} == fold_versions(app)


def test_small_batches_and_a_rebuild_agree_on_a_long_history(app: SalesPlanning) -> None:
    history = generate_history(app, seed=11, commands=200)
    rnd = random.Random(3)
    steps = iter(range(10**6))

    def meanwhile_on_the_other_plan() -> None:
        # Interleave a second plan's revisions and publications with the story's events.
        plan = app.get(Plan, history.plan_id)
        when = plan.last_effective_at + timedelta(hours=1)
        if next(steps) % 4 == 3:
            app.publish_plan(plan.id, actor="cfo", effective_at=when)
            return
        target = rnd.choice(sorted((t for t in plan.targets.values() if t["metric"] in ADDITIVE_METRICS),
                                   key=lambda t: str(t["target_id"])))
        value = target["committed"] + 1
        app.revise_target(plan.id, target_id=target["target_id"], committed=value,
                          stretch=None if target["stretch"] is None else max(value, target["stretch"]),
                          absorb=None if target["parent_id"] is None else "parent",
                          reason="weekly tuning", actor="cfo", effective_at=when)

    s = tell_story(app, step=meanwhile_on_the_other_plan)
    engine = projected(app, batch_size=3, projections=[version_folds.PlanVersionsProjection()])
    caught_up(engine)
    tables = version_folds.LIVE.tables
    live = dump(app, tables)
    engine.rebuild("plan_version")
    assert dump(app, tables) == live
    expected = fold_versions(app)
    with connect(app) as conn:
        stored = {(plan, v.version): version_tree(conn, plan, v.version).targets
                  for plan in (history.plan_id, s.plan) for v in list_versions(conn, plan)}
    assert stored == expected and len(expected) >= 7

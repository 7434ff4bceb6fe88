"""Pipeline analytics on the retrospective quarter (tests/retro_quarter.py), answers worked out by hand.

The stays, in days (09:00 to 09:00), as told in the quarter:

    d1 lead 5, qualified 10, proposal 14 (20 Jan → 3 Feb), won 3 Feb
    d2 lead 10, qualified 20, lost 5 Feb
    d3 lead 10, qualified 10, needs_analysis 10, proposal 3, needs_analysis 2, proposal 5, negotiation 20, won 9 Mar
    d4 lead 45 (1 Feb → 18 Mar), qualified since 18 Mar: 13 days at 31 March
    d5 qualified 20, won 30 Jan
    d6 lead 10 (in December), qualified 16 (30 Dec → 15 Jan), proposal since 15 Jan: 75 days at 31 March
    d7 lead 5 (20 → 25 Mar), qualified since 25 Mar: 6 days at 31 March
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.application import SalesPlanning
from domain.errors import ValidationError
from projections.history import Cut
from projections.queries.analytics import Funnel, FunnelGroup, funnel, jsonable
from tests.retro_quarter import RetroQuarter, at, catch_up

Q1 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
FEBRUARY = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
END_OF_MARCH = at(3, 31)


@pytest.fixture
def told(app: SalesPlanning) -> tuple[RetroQuarter, int, int]:
    """The quarter, with the projections caught up: (quarter, position before the second half, head)."""
    quarter = RetroQuarter(app)
    mid = catch_up(app)
    quarter.second_half()
    return quarter, mid, catch_up(app)


def ask(app: SalesPlanning, position: int, span: tuple[datetime, datetime] = Q1, **kwargs: object) -> Funnel:
    with app.database.engine.connect() as conn:
        return funnel(conn, cut=Cut(position, END_OF_MARCH), at=END_OF_MARCH, span_start=span[0],
                      span_end=span[1], **kwargs)  # type: ignore[arg-type]


def rates(group: FunnelGroup) -> list[tuple[str, int, int, Decimal | None]]:
    return [(c.from_stage, c.reached, c.converted, c.rate) for c in group.conversion]


def test_the_quarter_funnel_for_everyone(app: SalesPlanning, told: tuple[RetroQuarter, int, int]) -> None:
    quarter, _, head = told
    answer = ask(app, head)
    assert answer.position == head and answer.as_of == END_OF_MARCH
    [everyone] = answer.groups
    assert everyone.key == "all"
    # Distinct deals entering each stage in Q1: d6's lead and first qualification were in December,
    # d5 opened straight in qualified, d3's two entries into needs_analysis and proposal count once.
    assert everyone.entered == {"lead": 5, "qualified": 6, "needs_analysis": 1, "proposal": 3, "negotiation": 1,
                                "won": 3, "lost": 1}
    assert rates(everyone) == [
        # reached lead in Q1: d1 d2 d3 d4 d5 (opening in qualified passes lead) d7; all were qualified later.
        ("lead", 6, 6, Decimal("1.0000")),
        # reached qualified in Q1: d1 d2 d3 d4 d5 d7 (d6 in December); beyond it: d1 (skipped to proposal) d3 d5 (won).
        ("qualified", 6, 3, Decimal("0.5000")),
        # reached needs_analysis in Q1: d1 (by skipping, 20 Jan) d3 d5 d6 (15 Jan); all reached proposal.
        ("needs_analysis", 4, 4, Decimal("1.0000")),
        # reached proposal: d1 d3 d5 d6; d6 still sits there.
        ("proposal", 4, 3, Decimal("0.7500")),
        ("negotiation", 3, 3, Decimal("1.0000")),
    ]
    assert (everyone.won, everyone.lost, everyone.win_rate) == (3, 1, Decimal("0.7500"))
    assert everyone.won_amount == {"EUR": Decimal("16000.00"), "USD": Decimal("2000.00")}
    assert everyone.average_order_value == {"EUR": Decimal("8000.00"), "USD": Decimal("2000.00")}
    assert everyone.average_sales_cycle_days == Decimal("36.33")  # (29 + 60 + 20) / 3
    assert everyone.average_days_in_stage == {
        "lead": Decimal("15.00"),  # d1 5, d2 10, d3 10, d4 45, d7 5 (d6's ended in December)
        "qualified": Decimal("15.20"),  # d1 10, d2 20, d3 10, d5 20, d6 16 (ended 15 Jan)
        "needs_analysis": Decimal("6.00"),  # d3: 10 and 2, two stays
        "proposal": Decimal("7.33"),  # d1 14, d3 3 and 5
        "negotiation": Decimal("20.00"),
    }
    # 14 days: only d6 (75 days in proposal); d4 has been qualified for 13 days.
    assert [(s.deal_id, s.stage, s.days_in_stage) for s in everyone.stalled] == [
        (quarter.d6, "proposal", Decimal("75.00"))]
    sooner = ask(app, head, stalled_after_days=13).groups[0]
    assert [s.deal_id for s in sooner.stalled] == [quarter.d6, quarter.d4]

    as_json = json.loads(json.dumps(jsonable(answer)))
    assert as_json["groups"][0]["average_order_value"] == {"EUR": "8000.00", "USD": "2000.00"}
    assert as_json["groups"][0]["stalled"][0]["deal_id"] == str(quarter.d6)


def test_february_counts_only_what_happened_in_february(app: SalesPlanning, told: tuple[RetroQuarter, int, int]
                                                        ) -> None:
    _, _, head = told
    [feb] = ask(app, head, FEBRUARY).groups
    assert feb.entered == {"lead": 1, "qualified": 0, "needs_analysis": 1, "proposal": 1, "negotiation": 1,
                           "won": 1, "lost": 1}
    assert rates(feb) == [
        ("lead", 1, 1, Decimal("1.0000")),  # d4 opened 1 Feb, qualified on 18 March: later, by the cut
        ("qualified", 0, 0, None),
        ("needs_analysis", 0, 0, None),  # d3 reached it on 28 Jan; its return on 10 Feb is no new reach
        ("proposal", 1, 1, Decimal("1.0000")),  # d3 on 7 Feb
        ("negotiation", 2, 2, Decimal("1.0000")),  # d1 by winning on 3 Feb, d3 on 17 Feb
    ]
    assert (feb.won, feb.lost, feb.win_rate) == (1, 1, Decimal("0.5000"))  # d1 won, d2 lost
    assert feb.average_sales_cycle_days == Decimal("29.00")
    assert feb.average_days_in_stage == {
        "lead": None, "qualified": Decimal("20.00"), "needs_analysis": Decimal("6.00"),
        "proposal": Decimal("7.33"), "negotiation": None,
    }


def test_grouped_by_unit_a_deal_follows_its_owner_at_close_or_now(app: SalesPlanning,
                                                                 told: tuple[RetroQuarter, int, int]) -> None:
    quarter, _, head = told
    east, west = ask(app, head, group_by="unit").groups
    assert (east.key, east.name, west.key, west.name) == (str(quarter.east), "East", str(quarter.west), "West")
    # East: d1 and d2 (Ann was in East when they closed), d3, d4. West: d5, d6, and Ann's open d7.
    assert east.entered["lead"] == 4 and east.entered["qualified"] == 4
    assert (east.won, east.lost, east.win_rate) == (2, 1, Decimal("0.6667"))
    assert east.average_order_value == {"EUR": Decimal("8000.00")}
    assert east.average_sales_cycle_days == Decimal("44.50")  # (29 + 60) / 2
    assert east.stalled == []
    assert west.entered["lead"] == 1 and west.entered["qualified"] == 2 and west.entered["proposal"] == 1
    assert rates(west)[0] == ("lead", 2, 2, Decimal("1.0000"))  # d5 and d7
    assert (west.won, west.lost, west.win_rate) == (1, 0, Decimal("1.0000"))
    assert west.average_order_value == {"USD": Decimal("2000.00")}
    assert west.average_days_in_stage["lead"] == Decimal("5.00")  # d7 only
    assert [s.deal_id for s in west.stalled] == [quarter.d6]

    # Narrowed to East's subtree, the one group is East's.
    [only_east] = ask(app, head, unit_id=quarter.east).groups
    assert (only_east.key, only_east.entered, only_east.win_rate) == ("all", east.entered, east.win_rate)
    assert only_east.conversion == east.conversion


def test_grouped_by_member_product_line_region_and_segment(app: SalesPlanning,
                                                           told: tuple[RetroQuarter, int, int]) -> None:
    quarter, _, head = told
    by_member = {g.name: g for g in ask(app, head, group_by="member").groups}
    assert list(by_member) == ["Ann", "Bob", "Cid"]
    assert by_member["Ann"].key == str(quarter.ann)
    assert (by_member["Ann"].won, by_member["Ann"].lost, by_member["Ann"].entered["lead"]) == (1, 1, 3)
    assert by_member["Bob"].average_sales_cycle_days == Decimal("60.00")
    by_line = {g.key: g for g in ask(app, head, group_by="product_line").groups}
    assert by_line["RTX"].won_amount == {"EUR": Decimal("6000.00")}
    assert by_line["GTX"].won_amount == {"EUR": Decimal("10000.00"), "USD": Decimal("2000.00")}
    by_region = {g.key: g for g in ask(app, head, group_by="region").groups}
    assert (by_region["North"].won, by_region["North"].win_rate) == (2, Decimal("1.0000"))  # d1, d3
    assert (by_region["South"].won, by_region["South"].win_rate) == (1, Decimal("0.5000"))  # d5 won, d2 lost
    by_segment = {g.key: g for g in ask(app, head, group_by="segment").groups}
    assert by_segment["enterprise"].entered == by_region["North"].entered  # Acme is North and enterprise


def test_as_known_before_the_second_half_was_recorded(app: SalesPlanning, told: tuple[RetroQuarter, int, int]
                                                      ) -> None:
    quarter, mid, _ = told
    answer = ask(app, mid)
    assert answer.position == mid
    [then] = answer.groups
    # Not yet known: d4's qualification on 18 March and Ann's d7.
    assert then.entered["lead"] == 4 and then.entered["qualified"] == 4
    assert [(s.deal_id, s.days_in_stage) for s in then.stalled] == [(quarter.d6, Decimal("75.00")),
                                                                    (quarter.d4, Decimal("58.00"))]


def test_questions_that_make_no_sense_are_refused(app: SalesPlanning, told: tuple[RetroQuarter, int, int]) -> None:
    _, _, head = told
    with pytest.raises(ValidationError) as error:
        ask(app, head, group_by="colour")
    assert error.value.rule == "funnel.group_by"
    with pytest.raises(ValidationError) as error:
        ask(app, head, (Q1[1], Q1[0]))
    assert error.value.rule == "query.span_empty"
    with app.database.engine.connect() as conn, pytest.raises(ValidationError) as error:
        funnel(conn, cut=Cut(head, END_OF_MARCH), at=at(3, 1), span_start=Q1[0], span_end=Q1[1])
    assert error.value.rule == "query.at_before_cut"

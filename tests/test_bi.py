"""BI over SQL: the README's query, as a read-only role granted access before a rebuild, still answers after it.

The history: Ann (East) wins 1,000 and 500 EUR on 10 April, Bob (West) 700 EUR on 11 April; Ann
moves to West on 1 May and wins 300 EUR on 2 May. Won revenue by unit and month is then, by
hand: East April 2 deals 1,500; West April 1 deal 700; West May 1 deal 300 (Ann's April wins
stay with East). A BI team has granted a role SELECT on the views and on one table, built a view
and a materialized view of its own on top of ours, and commented them — all of it must survive
`rebuild`, and a swap that fails must leave everything as it was and say so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from domain.application import SalesPlanning
from domain.persistence import close_database
from projections import bi
from projections.registry import all_projections
from tests.api_helpers import Api, running_api
from tests.conftest import POSTGRES_URL, reset_postgres

CEST = timezone(timedelta(hours=2))
README = Path(__file__).resolve().parent.parent / "README.md"


def readme_query() -> str:
    text = README.read_text()
    match = re.search(r"<!-- bi-example -->\s*```sql\n(.*?)```", text, re.S)
    assert match, "the README's BI example is marked <!-- bi-example -->"
    return match.group(1)


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"2026-{day}T10:00:00").replace(tzinfo=CEST)


def write_history(planning: SalesPlanning) -> dict[str, UUID]:
    actor = "setup"
    acme = planning.add_unit(name="ACME", actor=actor, effective_at=at("03-01")).id
    east = planning.add_unit(name="East", parent_id=acme, actor=actor, effective_at=at("03-01")).id
    west = planning.add_unit(name="West", parent_id=acme, actor=actor, effective_at=at("03-01")).id
    ann = planning.add_member(name="Ann", role="rep", unit_id=east, actor=actor, effective_at=at("03-01")).id
    bob = planning.add_member(name="Bob", role="rep", unit_id=west, actor=actor, effective_at=at("03-01")).id
    product = planning.add_product(name="Widget Pro", product_line="widgets", list_price="100", currency="EUR",
                                   actor=actor, effective_at=at("03-01")).id
    account = planning.add_account(name="Globex", segment="enterprise", region="east", actor=actor,
                                   effective_at=at("03-01")).id

    def won(owner: UUID, amount: str, opened: str, closed: str) -> UUID:
        deal = planning.open_deal(name=f"Globex {amount}", account_id=account, owner_id=owner, product_id=product,
                                  amount=amount, currency="EUR", expected_close=date(2026, 6, 30), actor=actor,
                                  effective_at=at(opened)).id
        planning.win_deal(deal, actor=actor, effective_at=at(closed))
        return deal

    won(ann, "1000", "04-01", "04-10")
    won(ann, "500", "04-02", "04-10")
    won(bob, "700", "04-03", "04-11")
    planning.move_member(ann, unit_id=west, reason="covers West from May", actor=actor, effective_at=at("05-01"))
    won(ann, "300", "04-20", "05-02")
    plan = planning.draft_plan(name="ACME 2026", span="2026", currency="EUR", unit_id=acme, actor=actor,
                               effective_at=at("03-01")).id
    from domain.values import Scope

    planning.set_target(plan, metric="revenue", period="2026-04", scope=Scope(unit_id=east), committed="2000",
                        actor=actor, effective_at=at("03-02"))
    return {"east": east, "west": west, "ann": ann, "bob": bob}


EXPECTED_BY_MONTH = [
    ("East", date(2026, 4, 1), "EUR", 2, Decimal(1500)),
    ("West", date(2026, 4, 1), "EUR", 1, Decimal(700)),
    ("West", date(2026, 5, 1), "EUR", 1, Decimal(300)),
]


@pytest.fixture
def bi_api(postgres_available: bool) -> Iterator[Api]:
    reset_postgres()
    with running_api(POSTGRES_URL) as api:
        yield api


@pytest.fixture
def reader(bi_api: Api) -> Iterator[str]:
    """A login role that may only read: granted on the views, one table, and the BI team's own view."""
    database = make_url(POSTGRES_URL).database
    role = f"{database}_bi_reader"
    engine = bi_api.services.database.engine

    def drop(conn: sa.Connection) -> None:
        if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))

    with engine.begin() as conn:
        drop(conn)
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(sa.text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT ON {", ".join(bi.VIEWS)} TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT ON progress_deals TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT (name) ON progress_units TO "{role}"'))
    try:
        yield role
    finally:
        with engine.begin() as conn:
            drop(conn)


def as_role(role: str) -> sa.Engine:
    return sa.create_engine(make_url(POSTGRES_URL).set(username=role), poolclass=sa.pool.NullPool)


def bi_team_builds_on_the_views(api: Api, role: str) -> None:
    with api.services.database.engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW team_west AS SELECT day, member_name, revenue FROM bi_won_revenue_daily "
                             "WHERE unit_name = 'West'"))
        conn.execute(sa.text("COMMENT ON VIEW team_west IS 'West''s wins, for the West dashboard'"))
        conn.execute(sa.text("COMMENT ON COLUMN team_west.revenue IS 'EUR'"))
        conn.execute(sa.text(f'GRANT SELECT ON team_west TO "{role}"'))
        conn.execute(sa.text("CREATE MATERIALIZED VIEW deals_per_stage AS SELECT stage, count(*) AS deals "
                             "FROM bi_current_deals GROUP BY stage"))
        conn.execute(sa.text("CREATE UNIQUE INDEX deals_per_stage_stage ON deals_per_stage (stage)"))
        conn.execute(sa.text(f'GRANT SELECT ON deals_per_stage TO "{role}"'))


def the_reader_sees(role: str) -> dict[str, Any]:
    with as_role(role).connect() as conn:
        return {
            "by_month": [tuple(r) for r in conn.execute(sa.text(readme_query()))],
            "west": sorted((r.day, r.member_name, r.revenue) for r in conn.execute(sa.text("SELECT * FROM team_west"))),
            "stages": [tuple(r) for r in conn.execute(sa.text("SELECT * FROM deals_per_stage"))],
            "deals": conn.execute(sa.text("SELECT count(*) FROM progress_deals WHERE next_position IS NULL")).scalar(),
            "unit_names": sorted(conn.execute(sa.text("SELECT name FROM progress_units")).scalars()),
        }


@pytest.mark.postgres
def test_the_readme_query_answers_for_a_read_only_role_after_a_rebuild(bi_api: Api, reader: str) -> None:
    write_history(bi_api.planning)
    bi_api.services.wait_for(bi_api.head())
    bi_team_builds_on_the_views(bi_api, reader)
    before = the_reader_sees(reader)
    assert before["by_month"] == EXPECTED_BY_MONTH
    assert before["west"] == [(date(2026, 4, 11), "Bob", Decimal(700)), (date(2026, 5, 2), "Ann", Decimal(300))]
    assert before["stages"] == [("won", 4)] and before["deals"] == 4

    for name in bi_api.services.engine.projections:
        bi_api.services.engine.rebuild(name)

    assert the_reader_sees(reader) == before
    for refused in ("DELETE FROM progress_deals", "SELECT unit_id FROM progress_units",  # only its name was granted
                    "SELECT member_id FROM progress_members"):  # never granted
        with as_role(reader).connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text(refused))
    with bi_api.services.database.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT obj_description('team_west'::regclass)")).scalar() == \
            "West's wins, for the West dashboard"
        assert conn.execute(sa.text("SELECT count(*) FROM pg_indexes WHERE indexname = 'deals_per_stage_stage'")
                            ).scalar() == 1
        for table, (comment, columns) in bi.TABLES.items():
            assert conn.execute(sa.text("SELECT obj_description(CAST(:t AS regclass))"), {"t": table}).scalar() == comment
            described = dict(conn.execute(sa.text(
                "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
                "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"), {"t": table}).all())
            assert described == dict(columns), table
        for view, spec in bi.VIEWS.items():
            found = conn.execute(sa.text(
                "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
                "WHERE attrelid = CAST(:v AS regclass) AND attnum > 0 ORDER BY attnum"), {"v": view}).all()
            assert [tuple(f) for f in found] == list(spec.columns.items()), view  # the documented columns, in order
        leftovers = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE tablename LIKE '%\\_\\_g%'")).all()
        assert leftovers == []


@pytest.mark.postgres
def test_a_swap_that_fails_is_rolled_back_and_reported(bi_api: Api, reader: str, monkeypatch: Any) -> None:
    write_history(bi_api.planning)
    bi_api.services.wait_for(bi_api.head())
    bi_team_builds_on_the_views(bi_api, reader)
    before = the_reader_sees(reader)
    engine = bi_api.services.engine
    generation = next(s for s in engine.status() if s.name == "progress").generation

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("could not extend file: No space left on device")

    monkeypatch.setattr(bi, "after_swap", full_disk)
    with pytest.raises(RuntimeError, match="No space left"):
        engine.rebuild("progress")
    monkeypatch.undo()

    assert the_reader_sees(reader) == before  # the views, the grants and the live rows as they were
    with bi_api.services.database.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'progress%\\_\\_g%'")).all() == []
        names = conn.execute(sa.text("SELECT name FROM salesplan_projections WHERE name LIKE 'progress%'")).scalars()
        assert list(names) == ["progress"]
    progress = next(s for s in engine.status() if s.name == "progress")
    assert (progress.status, progress.generation) == ("live", generation)
    ready = bi_api.get("anon", "/readyz")
    assert ready.status_code == 200  # the live tables answer: the service stays ready
    failure = next(p for p in ready.json()["projections"] if p["name"] == "progress")["last_rebuild_failure"]
    assert failure["generation"] == generation + 1 and "No space left on device" in failure["error"]
    listed = bi_api.get("viewer", "/projections").json()["projections"]
    assert next(p for p in listed if p["name"] == "progress")["last_rebuild_failure"] == failure

    engine.rebuild("progress")  # once the disk has room again
    ready = bi_api.get("anon", "/readyz").json()
    assert next(p for p in ready["projections"] if p["name"] == "progress")["last_rebuild_failure"] is None
    assert the_reader_sees(reader) == before


def test_on_sqlite_a_view_of_ones_own_survives_rebuilds_good_and_failed(tmp_path: Path, monkeypatch: Any) -> None:
    """SQLite refuses to rename a table while any view is broken: the swap keeps views there too."""
    url = f"sqlite:///{tmp_path / 'salesplan.db'}"
    try:
        with running_api(url) as api:
            write_history(api.planning)
            api.services.wait_for(api.head())
            database = api.services.database.engine
            with database.begin() as conn:
                conn.execute(sa.text("CREATE VIEW my_wins AS SELECT deal_id FROM progress_deals "
                                     "WHERE stage = 'won' AND next_position IS NULL"))

            def wins() -> int:
                with database.connect() as conn:
                    return int(conn.execute(sa.text("SELECT count(*) FROM my_wins")).scalar_one())

            api.services.engine.rebuild("progress")
            assert wins() == 4
            monkeypatch.setattr(bi, "after_swap", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk I/O error")))
            with pytest.raises(RuntimeError, match="disk I/O error"):
                api.services.engine.rebuild("progress")
            monkeypatch.undo()
            assert wins() == 4
            with database.connect() as conn:
                assert conn.execute(sa.text("SELECT name FROM sqlite_master WHERE name LIKE '%\\_\\_g%' ESCAPE '\\'")
                                    ).all() == []
            failure = next(p for p in api.get("anon", "/readyz").json()["projections"] if p["name"] == "progress")
            assert "disk I/O error" in failure["last_rebuild_failure"]["error"]
            assert bi.VIEWS.keys().isdisjoint(sa.inspect(database).get_view_names())  # no bi_* views on SQLite
    finally:
        close_database(url)


def test_every_projection_table_and_column_is_documented() -> None:
    """A new table or column needs its COMMENT in projections/bi.py (the BI tools' catalogue shows them)."""
    for projection in all_projections():
        for table in projection.tables:
            assert table.name in bi.TABLES, table.name
            comment, columns = bi.TABLES[table.name]
            assert comment and set(columns) == {c.name for c in table.columns}, table.name
            assert all(columns.values()), table.name
    assert set(bi.TABLES) == {t.name for p in all_projections() for t in p.tables}
    for name, view in bi.VIEWS.items():
        assert name.startswith("bi_") and view.comment and all(view.columns.values())
        assert view.tables <= bi.TABLES.keys()

"""The catalogue projection: products and accounts as they were at any cut, the same live and rebuilt."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from domain.application import SalesPlanning
from projections.engine import ProjectionEngine
from projections.folds.catalogue import LIVE, CatalogueProjection
from projections.history import Cut
from projections.queries.collections import list_accounts, list_products
from tests.test_stored_events import ident, write_every_event


def dump(app: SalesPlanning) -> dict[str, list[tuple[Any, ...]]]:
    with app.database.engine.connect() as conn:
        return {t.name: sorted(tuple(map(str, r)) for r in conn.execute(sa.select(t))) for t in LIVE.tables}


def test_a_price_change_and_a_reclassification_are_history_not_overwrites(app: SalesPlanning) -> None:
    write_every_event(app)  # Platform licence 40,000.00 then 42,000.50; Müller GmbH enterprise/East then mid-market/West
    engine = ProjectionEngine(app, [CatalogueProjection()])
    engine.setup()
    engine.catch_up()
    with app.database.engine.connect() as conn:
        p = LIVE.products.c
        first_change = conn.execute(sa.select(sa.func.min(p.next_position))).scalar_one()
        before, now = Cut(first_change - 1), Cut(engine.head())
        (then,) = list_products(conn, cut=before)
        (current,) = list_products(conn, cut=now)
        assert (then.product_id, then.name, then.list_price) == (ident("product"), "Platform licence", Decimal("40000.00"))
        assert current.list_price == Decimal("42000.50")
        (account,) = list_accounts(conn, cut=now)
        assert (account.name, account.segment, account.region) == ("Müller GmbH", "mid-market", "West")
        assert list_accounts(conn, cut=now, segment="enterprise") == []
        rows = conn.execute(sa.select(LIVE.accounts.c.segment, LIVE.accounts.c.next_position)
                            .order_by(LIVE.accounts.c.position)).all()
        assert [r.segment for r in rows] == ["enterprise", "mid-market"] and rows[-1].next_position is None


def test_a_rebuild_and_small_batches_give_the_rows_of_live_processing(app: SalesPlanning) -> None:
    write_every_event(app)
    engine = ProjectionEngine(app, [CatalogueProjection()], batch_size=1)
    engine.setup()
    engine.catch_up()
    live = dump(app)
    assert len(live["catalogue_products"]) == 2 and len(live["catalogue_accounts"]) == 2
    engine.rebuild("catalogue")
    assert dump(app) == live

"""Catalogue: the products sold and the accounts sold to, as they were at any cut.

Lists, pickers and BI views name products and accounts; no other projection keeps them.
Like the organisation in ``progress``, each is a history table (one row per change, see
``projections.history``), so a read at a cut names them as they were then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.catalogue import Account, Product
from projections.engine import Envelope, Projection
from projections.history import HistoryWriter, history_columns
from projections.sqltypes import Money

State = dict[str, Any]


def evolve_product(state: State | None, event: Any) -> State:
    if isinstance(event, Product.Added):
        return {"name": event.name, "product_line": event.product_line, "list_price": event.list_price,
                "currency": event.currency}
    assert state is not None
    if isinstance(event, Product.ListPriceChanged):
        return {**state, "list_price": event.list_price}
    raise TypeError(f"unexpected product event {type(event).__qualname__}")


def evolve_account(state: State | None, event: Any) -> State:
    if isinstance(event, Account.Added):
        return {"name": event.name, "segment": event.segment, "region": event.region}
    assert state is not None
    if isinstance(event, Account.Reclassified):
        return {**state, "segment": event.segment, "region": event.region}
    raise TypeError(f"unexpected account event {type(event).__qualname__}")


PRODUCT_EVENTS = (Product.Added, Product.ListPriceChanged)
ACCOUNT_EVENTS = (Account.Added, Account.Reclassified)


class CatalogueProjection(Projection):
    """Answers "what is this product or account called, and how is it classified", at any cut."""

    name = "catalogue"
    fold_version = 1
    topics = (*PRODUCT_EVENTS, *ACCOUNT_EVENTS)

    def define_tables(self) -> None:
        self.products = self.table(
            "catalogue_products", *history_columns("product_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("product_line", sa.String(200), nullable=False),
            sa.Column("list_price", Money, nullable=False),
            sa.Column("currency", sa.String(3), nullable=False),
        )
        self.accounts = self.table(
            "catalogue_accounts", *history_columns("account_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("segment", sa.String(200), nullable=False),
            sa.Column("region", sa.String(200), nullable=False),
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        products = HistoryWriter(conn, self.products, "product_id")
        accounts = HistoryWriter(conn, self.accounts, "account_id")
        products.prefetch({e.event.originator_id for e in batch if isinstance(e.event, Product.ListPriceChanged)})
        accounts.prefetch({e.event.originator_id for e in batch if isinstance(e.event, Account.Reclassified)})
        for envelope in batch:
            e = envelope.event
            stamp = (envelope.position, e.effective_at, envelope.recorded_at)
            if isinstance(e, PRODUCT_EVENTS):
                before = None if isinstance(e, Product.Added) else products.current(e.originator_id)
                products.append(e.originator_id, evolve_product(before, e), *stamp)
            elif isinstance(e, ACCOUNT_EVENTS):
                before = None if isinstance(e, Account.Added) else accounts.current(e.originator_id)
                accounts.append(e.originator_id, evolve_account(before, e), *stamp)
        products.flush()
        accounts.flush()


LIVE = CatalogueProjection()
"""The live tables, for queries."""

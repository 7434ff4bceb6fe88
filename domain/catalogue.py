"""Catalogue: the products sold (with their product line) and the accounts sold to."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from domain.aggregate import SalesAggregate


class Product(SalesAggregate):
    class Added(SalesAggregate.Created):
        name: str
        product_line: str
        list_price: Decimal
        currency: str

    class ListPriceChanged(SalesAggregate.Event):
        list_price: Decimal
        previous_list_price: Decimal

        def apply(self, aggregate: Product) -> None:
            aggregate.list_price = self.list_price

    def __init__(self, name: str, product_line: str, list_price: Decimal, currency: str) -> None:
        self.name = name
        self.product_line = product_line
        self.list_price = list_price
        self.currency = currency

    @classmethod
    def add(
        cls, *, id: UUID, name: str, product_line: str, list_price: Decimal, currency: str,
        actor: str, effective_at: datetime,
    ) -> Product:
        return cls._create(
            cls.Added, id=id, name=name, product_line=product_line, list_price=list_price,
            currency=currency, actor=actor, effective_at=effective_at,
        )

    def change_list_price(self, list_price: Decimal, *, actor: str, effective_at: datetime) -> None:
        self.check_effective(effective_at)
        self.trigger_event(
            self.ListPriceChanged, list_price=list_price, previous_list_price=self.list_price,
            actor=actor, effective_at=effective_at,
        )


class Account(SalesAggregate):
    """A customer: its segment and region narrow targets and pipeline reports."""

    class Added(SalesAggregate.Created):
        name: str
        segment: str
        region: str

    class Reclassified(SalesAggregate.Event):
        segment: str
        region: str
        previous_segment: str
        previous_region: str

        def apply(self, aggregate: Account) -> None:
            aggregate.segment = self.segment
            aggregate.region = self.region

    def __init__(self, name: str, segment: str, region: str) -> None:
        self.name = name
        self.segment = segment
        self.region = region

    @classmethod
    def add(
        cls, *, id: UUID, name: str, segment: str, region: str, actor: str, effective_at: datetime
    ) -> Account:
        return cls._create(
            cls.Added, id=id, name=name, segment=segment, region=region, actor=actor, effective_at=effective_at
        )

    def reclassify(self, segment: str, region: str, *, actor: str, effective_at: datetime) -> None:
        self.check_effective(effective_at)
        self.trigger_event(
            self.Reclassified, segment=segment, region=region, previous_segment=self.segment,
            previous_region=self.region, actor=actor, effective_at=effective_at,
        )

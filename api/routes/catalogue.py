"""Products (admin only: they carry prices) and accounts."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api import schemas as s
from api.deps import ChangeDep, CreateDep, GuardDep, WaitForPosition, etag
from api.errors import PROBLEM_RESPONSES
from api.openapi import VERSIONED
from domain.catalogue import Account, Product

router = APIRouter(tags=["catalogue"], responses=PROBLEM_RESPONSES)


@router.post("/products", status_code=201)
def add_product(body: s.AddProduct, cmd: CreateDep) -> s.CommandOut:
    cmd.guard.admin()
    return cmd.run(cmd.planning.add_product, body, "/products/{id}", name=body.name, product_line=body.product_line,
                   list_price=body.list_price, currency=body.currency, id=body.id)


@router.get("/products/{product_id}", responses=VERSIONED)
def get_product(product_id: UUID, guard: GuardDep, response: Response,
                wait_for_position: WaitForPosition = None) -> s.ProductOut:
    product = guard.planning.get(Product, product_id)
    etag(response, product.version)
    return s.ProductOut(id=product.id, version=product.version, last_effective_at=product.last_effective_at,
                        name=product.name, product_line=product.product_line, list_price=product.list_price,
                        currency=product.currency)


@router.post("/products/{product_id}/list-price")
def change_list_price(product_id: UUID, body: s.ChangeListPrice, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.admin()
    return cmd.run(cmd.planning.change_list_price, body, "/products/{id}", product_id, list_price=body.list_price)


@router.post("/accounts", status_code=201)
def add_account(body: s.AddAccount, cmd: CreateDep) -> s.CommandOut:
    cmd.guard.not_rep()
    return cmd.run(cmd.planning.add_account, body, "/accounts/{id}", name=body.name, segment=body.segment,
                   region=body.region, id=body.id)


@router.get("/accounts/{account_id}", responses=VERSIONED)
def get_account(account_id: UUID, guard: GuardDep, response: Response,
                wait_for_position: WaitForPosition = None) -> s.AccountOut:
    account = guard.planning.get(Account, account_id)
    etag(response, account.version)
    return s.AccountOut(id=account.id, version=account.version, last_effective_at=account.last_effective_at,
                        name=account.name, segment=account.segment, region=account.region)


@router.post("/accounts/{account_id}/reclassify")
def reclassify_account(account_id: UUID, body: s.ReclassifyAccount, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.not_rep()
    return cmd.run(cmd.planning.reclassify_account, body, "/accounts/{id}", account_id, segment=body.segment,
                   region=body.region)

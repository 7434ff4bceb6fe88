"""The rules of the road over HTTP: clean problems for bad input, concurrency control, idempotency, tokens.

Every refusal is an ``application/problem+json`` 4xx naming its rule and the offending field,
and writes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from api.tokens import TokenError, create_token, list_tokens, revoke_token
from domain.application import StoreUnavailable
from tests.api_helpers import Api, api_fixture, open_deal, running_api  # noqa: F401 — the `api` fixture


def problem(response: Any, status: int, rule: str, *, pointer: str | None = None,
            parameter: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["rule"] == rule, body
    assert body["type"] == f"urn:salesplan:problem:{rule}"
    assert body["detail"]
    if pointer is not None:
        assert body["pointer"] == pointer, body
    if parameter is not None:
        assert body["parameter"] == parameter, body
    return body


def deal_body(api: Api, **overrides: Any) -> dict[str, Any]:
    return {"name": "Globex expansion", "account_id": str(api.world.account), "owner_id": str(api.world.ann),
            "product_id": str(api.world.product), "amount": "2500.00", "currency": "EUR",
            "expected_close": "2026-06-30", **overrides}


def refused(api: Api, role: str, path: str, body: Any, status: int, rule: str, **where: str) -> dict[str, Any]:
    before = api.head()
    result = problem(api.post(role, path, body), status, rule, **where)
    assert api.head() == before, "a refused command wrote events"
    return result


# --- bad input: always a 4xx with the rule and a pointer, never a 500 ---------------------------------


@pytest.mark.parametrize(("amount", "rule"), [
    ("-5", "decimal.negative"), ("NaN", "decimal.not_finite"), ("Infinity", "decimal.not_finite"),
    ("-Infinity", "decimal.not_finite"), ("1e3", "decimal.format"), ("twelve", "decimal.not_a_number"),
    (12.5, "decimal.type"), ("1000000000000000", "money.too_large"), ("10.001", "money.too_precise"),
])
def test_money_must_be_a_finite_non_negative_decimal_string(api: Api, amount: Any, rule: str) -> None:
    status = 422
    refused(api, "rep", "/deals", deal_body(api, amount=amount), status, rule, pointer="/amount")


def test_weights_that_do_not_sum_to_one_are_refused(api: Api) -> None:
    plan = api.ok("manager", "/plans", {"name": "East 2026", "span": "2026", "currency": "EUR",
                                        "unit_id": str(api.world.east)})
    target = api.ok("manager", f"/plans/{plan['id']}/targets", {
        "metric": "revenue", "period": "2026", "scope": {"unit_id": str(api.world.east)}, "committed": "1200000"},
        if_match=plan["version"])
    before = api.head()
    response = api.post("manager", f"/plans/{plan['id']}/decompose", {
        "parent_id": target["target_id"], "by": "period", "parts": ["2026-Q1", "2026-Q2"], "method": "weights",
        "weights": ["0.5", "0.4"]}, if_match=target["version"])
    body = problem(response, 422, "decomposition.weights_sum", pointer="/weights")
    assert "0.9" in body["detail"]
    assert api.head() == before


def test_unknown_enum_values_list_the_allowed_ones(api: Api) -> None:
    deal = open_deal(api, api.world.ann)
    response = api.post("rep", f"/deals/{deal}/stage", {"stage": "closed_won"}, if_match=1)
    body = problem(response, 422, "input.literal_error", pointer="/stage")
    assert body["errors"][0]["allowed"] == ["lead", "qualified", "needs_analysis", "proposal", "negotiation", "won",
                                           "lost"]
    metric = problem(api.get("admin", "/progress", metric="profit"), 422, "input.literal_error", parameter="metric")
    assert "revenue" in metric["errors"][0]["allowed"]


def test_illegal_stage_transitions_list_the_allowed_next_stages(api: Api) -> None:
    deal = open_deal(api, api.world.ann, stage="proposal")
    same = refused(api, "rep", f"/deals/{deal}/stage", {"stage": "proposal"}, 428, "precondition.if_match_required",
                   parameter="If-Match")
    assert same
    before = api.head()
    response = api.post("rep", f"/deals/{deal}/stage", {"stage": "proposal"}, if_match=1)
    body = problem(response, 422, "deal.illegal_transition", pointer="/stage")
    assert body["allowed_next_stages"] == ["lead", "qualified", "needs_analysis", "negotiation", "won", "lost"]
    backwards = problem(api.post("rep", f"/deals/{deal}/stage", {"stage": "lead"}, if_match=1), 422,
                        "reason.required", pointer="/reason")
    assert backwards
    won = api.ok("rep", f"/deals/{deal}/win", {}, if_match=1)
    closed = problem(api.post("rep", f"/deals/{deal}/stage", {"stage": "negotiation"}, if_match=won["version"]), 422,
                     "deal.closed")
    assert closed["allowed_next_stages"] == []
    assert api.head() == before + 1  # only the win


@pytest.mark.parametrize(("value", "rule"), [
    ("2026-03-01T10:00:00", "time.naive"), ("2026-03-01 10:00", "time.naive"), ("2026-02-30T10:00:00Z", "time.invalid"),
    ("2026-03-01T25:00:00+01:00", "time.invalid"), ("yesterday", "time.format"), (1767225600, "time.type"),
    ("0001-01-01T00:00:00+01:00", "time.invalid"),
])
def test_times_need_an_offset_and_must_exist(api: Api, value: Any, rule: str) -> None:
    refused(api, "rep", "/deals", deal_body(api, effective_at=value), 422, rule, pointer="/effective_at")


def test_a_time_in_the_future_is_refused_by_the_domain(api: Api) -> None:
    refused(api, "rep", "/deals", deal_body(api, effective_at="2999-01-01T00:00:00Z"), 422, "time.in_future",
            pointer="/effective_at")


@pytest.mark.parametrize(("value", "rule"), [
    ("2026-02-30", "date.invalid"), ("2026-13-01", "date.invalid"), ("30/06/2026", "date.format"),
    ("2026-06-30T00:00:00Z", "date.format"), ("0999-01-01", "date.range"),
])
def test_impossible_dates_are_refused(api: Api, value: str, rule: str) -> None:
    refused(api, "rep", "/deals", deal_body(api, expected_close=value), 422, rule, pointer="/expected_close")


def test_nul_and_lone_surrogates_are_refused_before_they_reach_the_database(api: Api) -> None:
    refused(api, "rep", "/deals", deal_body(api, name="Globex\u0000"), 422, "text.invalid_character", pointer="/name")
    before = api.head()
    # A lone surrogate cannot be encoded by a JSON library; send the escaped form as raw JSON.
    raw = (f'{{"name": "Globex \\ud800", "owner_id": "{api.world.ann}", "product_id": "{api.world.product}", '
           '"amount": "1", "currency": "EUR", "expected_close": "2026-06-30"}')
    response = api.client.post("/deals", content=raw.encode(), headers={
        **api.headers("rep"), "Content-Type": "application/json"})
    problem(response, 422, "text.invalid_character", pointer="/name")
    unknown_key = api.client.post("/deals", content=b'{"\\ud800": 1}', headers={
        **api.headers("rep"), "Content-Type": "application/json"})
    problem(unknown_key, 422, "text.invalid_character", pointer="")
    assert api.head() == before


def test_unknown_fields_are_refused_no_mass_assignment(api: Api) -> None:
    body = refused(api, "rep", "/deals", deal_body(api, stage="lead", owner="someone", version=7), 422,
                   "input.extra_forbidden")
    assert {e["pointer"] for e in body["errors"]} == {"/owner", "/version"}
    nested = refused(api, "admin", f"/plans/{api.world.east}/targets", {
        "metric": "revenue", "period": "2026", "scope": {"unit_id": str(api.world.east), "admin": True},
        "committed": "1"}, 422, "input.extra_forbidden")
    assert nested["pointer"] == "/scope/admin"


def test_a_body_that_is_not_json_or_not_an_object(api: Api) -> None:
    for content in (b"{not json", b"[1, 2]", b"\xff\xfe\x00garbage", b""):
        response = api.client.post("/units", content=content, headers={
            **api.headers("admin"), "Content-Type": "application/json"})
        assert response.status_code == 422, (content, response.text)
        assert response.headers["content-type"] == "application/problem+json"


def test_oversize_bodies_get_413_whether_announced_or_streamed(database_url: str) -> None:
    with running_api(database_url, max_body_bytes=2000) as api:
        before = api.head()
        big = {"name": "x" * 5000}
        problem(api.post("admin", "/units", big), 413, "request.too_large")

        def chunks() -> Iterator[bytes]:
            yield b'{"name": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        streamed = api.client.post("/units", content=chunks(), headers={
            **api.headers("admin"), "Content-Type": "application/json"})
        problem(streamed, 413, "request.too_large")
        assert api.head() == before
        assert api.post("admin", "/units", {"name": "small"}).status_code == 201


def test_page_sizes_and_positions_are_bounded(api: Api) -> None:
    problem(api.get("admin", "/events", limit=100_000), 422, "input.less_than_equal", parameter="limit")
    problem(api.get("admin", "/events", limit=0), 422, "input.greater_than_equal", parameter="limit")
    problem(api.get("admin", "/events", after=-1), 422, "input.greater_than_equal", parameter="after")
    problem(api.get("admin", "/events", after=2**70), 422, "input.less_than_equal", parameter="after")
    problem(api.get("admin", "/progress", wait_for_position=10**9), 422, "position.beyond_head",
            parameter="wait_for_position")


def test_bad_path_and_query_parameters(api: Api) -> None:
    problem(api.get("admin", "/deals/not-a-uuid"), 422, "input.uuid_parsing", parameter="deal_id")
    problem(api.get("admin", "/progress", as_of="2026-03-31T00:00:00"), 422, "time.naive", parameter="as_of")
    problem(api.get("admin", "/progress", known_at="2026-03-31T00:00:00Z", known_at_position=3), 422,
            "cut.ambiguous", parameter="known_at_position")
    problem(api.get("admin", "/no/such/route"), 404, "route.not_found")


def test_domain_rules_name_their_field(api: Api) -> None:
    problem(api.post("rep", "/deals", deal_body(api, product_id=str(api.world.account))), 404, "product.not_found",
            pointer="/product_id")
    problem(api.post("admin", "/plans", {"name": "Q", "span": "2026-03", "currency": "EUR",
                                         "unit_id": str(api.world.east)}), 422, "plan.span_kind", pointer="/span")
    problem(api.post("admin", "/plans", {"name": "Q", "span": "26", "currency": "EUR",
                                         "unit_id": str(api.world.east)}), 422, "input.string_too_short",
            pointer="/span")


# --- optimistic concurrency ---------------------------------------------------------------------------


def test_reads_carry_an_etag_and_writes_need_if_match(api: Api) -> None:
    deal = open_deal(api, api.world.ann)
    read = api.get("rep", f"/deals/{deal}")
    assert read.headers["etag"] == '"1"'
    assert read.json()["amount"] == "1000"
    problem(api.post("rep", f"/deals/{deal}/amount", {"amount": "1200"}), 428, "precondition.if_match_required",
            parameter="If-Match")
    changed = api.post("rep", f"/deals/{deal}/amount", {"amount": "1200"}, if_match=read.headers["etag"])
    assert changed.status_code == 200
    assert changed.headers["etag"] == '"2"'
    assert changed.headers["location"] == f"/deals/{deal}"
    assert changed.json() == {"id": str(deal), "version": 2, "position": api.head()}
    before = api.head()
    stale = problem(api.post("rep", f"/deals/{deal}/amount", {"amount": "1300"}, if_match=read.headers["etag"]), 412,
                    "concurrency.version_conflict")
    assert stale["current_version"] == 2
    assert stale["expected_version"] == 1
    garbage = problem(api.post("rep", f"/deals/{deal}/amount", {"amount": "1300"}, if_match='W/"x"'), 412,
                      "concurrency.version_conflict")
    assert garbage["current_version"] == 2
    assert api.head() == before


def test_two_writers_with_the_same_version_exactly_one_wins(api: Api) -> None:
    deal = open_deal(api, api.world.ann)
    results: list[int] = []

    def write(amount: str) -> None:
        results.append(api.post("rep", f"/deals/{deal}/amount", {"amount": amount}, if_match=1).status_code)

    threads = [threading.Thread(target=write, args=(str(1100 + i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 412, 412, 412]
    assert api.version(deal) == 2


# --- idempotency ------------------------------------------------------------------------------------------


def test_a_retry_returns_the_first_answer_and_appends_nothing(api: Api) -> None:
    first = api.post("rep", "/deals", deal_body(api), key="open-globex-1")
    assert first.status_code == 201
    head = api.head()
    retry = api.post("rep", "/deals", deal_body(api), key="open-globex-1")
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]
    assert api.head() == head
    reused = problem(api.post("rep", "/deals", deal_body(api, amount="9999"), key="open-globex-1"), 422,
                     "idempotency.key_reused", parameter="Idempotency-Key")
    assert reused
    # Keys belong to their caller: Bob's "open-globex-1" is his own.
    assert api.post("other_rep", "/deals", deal_body(api, owner_id=str(api.world.bob)),
                    key="open-globex-1").status_code == 201
    assert api.head() == head + 1


def test_a_retried_change_is_not_applied_twice(api: Api) -> None:
    deal = open_deal(api, api.world.ann)
    first = api.post("rep", f"/deals/{deal}/stage", {"stage": "qualified"}, if_match=1, key="k-stage")
    retry = api.post("rep", f"/deals/{deal}/stage", {"stage": "qualified"}, if_match=1, key="k-stage")
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert api.version(deal) == 2
    problem(api.post("rep", "/units", {"name": "x"}, key="bad key with spaces"), 422, "input.string_pattern_mismatch",
            parameter="Idempotency-Key")


# --- authentication ----------------------------------------------------------------------------------------


def test_missing_bad_and_revoked_tokens_get_401(api: Api) -> None:
    before = api.head()
    assert problem(api.post("anon", "/units", {"name": "x"}), 401, "auth.missing_token")
    bad = api.client.post("/units", json={"name": "x"}, headers={"Authorization": "Bearer sp_0000000000000000_nope"})
    problem(bad, 401, "auth.invalid_token")
    assert bad.headers["www-authenticate"].startswith("Bearer")
    token_id, secret = create_token(api.services.database, role="admin", label="temp")
    assert api.client.get("/me", headers={"Authorization": f"Bearer {secret}"}).json()["role"] == "admin"
    assert revoke_token(api.services.database, token_id)
    problem(api.client.post("/units", json={"name": "x"}, headers={"Authorization": f"Bearer {secret}"}), 401,
            "auth.invalid_token")
    tampered = secret[:-2] + ("AA" if not secret.endswith("AA") else "BB")
    problem(api.client.get("/me", headers={"Authorization": f"Bearer {tampered}"}), 401, "auth.invalid_token")
    # Unauthenticated garbage is a 401, not a validation error: nothing is parsed before the token.
    problem(api.client.post("/units", content=b"{oops"), 401, "auth.missing_token")
    assert api.head() == before


def test_a_deactivated_members_token_stops_working(api: Api) -> None:
    assert api.get("other_rep", "/me").status_code == 200
    api.planning.deactivate_member(api.world.bob, reason="left the company", actor="setup")
    problem(api.get("other_rep", "/me"), 401, "auth.member_inactive")


def test_tokens_are_stored_hashed_and_listed_without_secrets(api: Api) -> None:
    database = api.services.database
    token_id, secret = create_token(database, member_id=api.world.cy, label="cy laptop")
    listed = {t.id: t for t in list_tokens(database)}
    assert listed[token_id].role == "rep"
    assert listed[token_id].member_id == api.world.cy
    assert secret.split("_")[-1] not in repr(listed[token_id])
    with database.engine.connect() as conn:
        stored = conn.exec_driver_sql("select hash from salesplan_tokens").scalars().all()
    assert all(secret.split("_", 2)[2] not in h for h in stored)
    with pytest.raises(TokenError):
        create_token(database, role="rep")  # a rep token names its member
    with pytest.raises(TokenError):
        create_token(database, role="manager", member_id=api.world.cy)  # Cy is a rep
    with pytest.raises(TokenError):
        create_token(database, role="superuser")
    assert create_token(database, role="viewer", member_id=api.world.mia)[0]  # a manager may also have a read token
    assert not revoke_token(database, "no-such-token")


def test_insecure_mode_is_explicit_and_marks_every_response(database_url: str, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    app = create_app(Settings(database_url=database_url, insecure_no_auth=True))
    with caplog.at_level("WARNING"), TestClient(app) as client:
        response = client.post("/units", json={"name": "Dev Co"})
        assert response.status_code == 201
        assert response.headers["x-salesplan-insecure"] == "no-auth"
        assert client.get("/healthz").headers["x-salesplan-insecure"] == "no-auth"
    assert "INSECURE_NO_AUTH" in caplog.text
    with TestClient(create_app(Settings(database_url=database_url))) as client:
        secure = client.post("/units", json={"name": "Dev Co"})
        assert secure.status_code == 401
        assert "x-salesplan-insecure" not in secure.headers


def test_store_unavailable_is_a_503_with_retry_after(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("could not obtain lock")

    monkeypatch.setattr(api.planning, "add_unit", unavailable)
    response = api.post("admin", "/units", {"name": "x"})
    problem(response, 503, "store.unavailable")
    assert response.headers["retry-after"] == "1"

"""The OpenAPI document tells the truth, and stays put.

- It is valid OpenAPI 3.1 (``openapi-spec-validator``), every reference resolving to a component.
- Operation ids are snake_case domain verbs, none of them FastAPI's default, and the list is held
  here: renaming one is an API change someone has to mean.
- Changes require If-Match; commands declare ETag and Location; reports and charts declare their
  media types; a body that is not JSON is declared 415.
- Every header the server answers (ETag, Location, Salesplan-Position, Retry-After) is declared
  for that operation and status, and every declared one is answered: checked on every read and
  on the commands of a small story.
- The change feed has one schema per event type the aggregates declare, each with exactly the
  event's fields: an event class added tomorrow gets its schema, and this test notices if not.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from functools import cache
from typing import Any

import httpx2
from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id
from openapi_spec_validator import validate

from api.app import create_app
from api.schemas import EVENT_MODELS
from api.settings import Settings
from tests.api_helpers import Api, api_fixture, create_task, open_deal  # noqa: F401 — the `api` fixture
from tests.test_stored_events import discovered_event_classes, ident, write_every_event

OPERATION_IDS = [
    "acknowledge_alert", "add_account", "add_member", "add_product", "add_unit", "add_webhook", "cancel_task",
    "change_deal_amount", "change_deal_expected_close", "change_deal_stage", "change_list_price", "change_webhook",
    "check_health", "check_readiness", "close_plan", "compare_plan_version_with_actuals", "compare_plan_versions",
    "complete_task", "create_task", "deactivate_member", "deactivate_unit", "decompose_target", "draft_plan",
    "evaluate_alerts", "get_account", "get_activity", "get_alert", "get_attribution", "get_baseline", "get_burnup",
    "get_burnup_svg", "get_deal", "get_funnel", "get_me", "get_member", "get_member_report", "get_member_report_csv",
    "get_metrics", "get_pipeline_deal", "get_pipeline_summary", "get_plan", "get_plan_version", "get_plan_versions",
    "get_product", "get_progress", "get_projections", "get_replay", "get_revision_reasons", "get_task",
    "get_task_summary", "get_unit", "get_unit_report", "get_unit_report_csv", "get_unit_tree", "list_accounts",
    "list_activities", "list_alerts", "list_audit_changes", "list_deliveries", "list_events", "list_members",
    "list_pipeline_deals", "list_plan_targets", "list_plans", "list_products", "list_tasks", "list_units",
    "list_webhooks", "lock_period", "log_activity", "lose_deal", "move_member", "move_unit", "open_deal", "preview_alerts",
    "publish_plan", "reassign_deal", "reassign_task", "reclassify_account", "remove_target", "rename_member",
    "rename_unit", "reopen_deal", "report_task_progress", "reschedule_task", "revise_target", "set_target",
    "unlock_period", "win_deal",
]
ANSWERED_HEADERS = ("etag", "location", "salesplan-position", "retry-after")


@cache
def document() -> dict[str, Any]:
    return create_app(Settings(database_url="sqlite:///:memory:")).openapi()


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document()["paths"].items() for method, op in item.items()]


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any error, e.g. a $ref to a schema that is not a component
    schemas = doc["components"]["schemas"]
    assert "ProblemItem" in schemas and "$defs" not in schemas["Problem"]
    assert schemas["Problem"]["properties"]["errors"]["anyOf"][0]["items"] == {"$ref": "#/components/schemas/ProblemItem"}


def test_every_operation_has_a_stable_snake_case_domain_name() -> None:
    app = create_app(Settings(database_url="sqlite:///:memory:"))
    ids = [op["operationId"] for _, _, op in operations()]
    assert sorted(ids) == OPERATION_IDS  # a rename here renames a generated client's function
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids)
    defaults = {generate_unique_id(route) for route in app.routes if isinstance(route, APIRoute)}
    assert not defaults & set(ids)  # e.g. set_target_plans__plan_id__targets_post


def _header(op: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in op.get("parameters", []) if p["in"] == "header" and p["name"] == name), None)


def test_changes_require_if_match_and_commands_declare_their_headers() -> None:
    changes = 0
    for path, method, op in operations():
        if_match, key = _header(op, "If-Match"), _header(op, "Idempotency-Key")
        if key is not None:  # a command: it answers the entity's version and where to read it
            success = op["responses"]["201" if "201" in op["responses"] else "200"]
            assert {"ETag", "Location"} <= set(success["headers"]), (path, method)
        # A command on an existing entity (its id in the path) needs If-Match; a create does not.
        on_entity = key is not None and "{" in path
        assert (if_match is not None) == on_entity, (path, method)
        if if_match is not None:
            changes += 1
            assert if_match["required"] is True and if_match["schema"]["type"] == "string"
            assert set(op["responses"]["412"]["headers"]) == {"ETag"}
            assert "428" in op["responses"]
        else:
            assert "412" not in op["responses"] and "428" not in op["responses"]
        assert ("415" in op["responses"]) == ("requestBody" in op), (path, method)
        assert ("413" in op["responses"]) == (method in ("post", "patch")), (path, method)
    # units 3, members 3, products 1, accounts 1, plans 8, tasks 5, deals 7
    assert changes == 28


def test_reports_and_charts_declare_their_media_types() -> None:
    paths = document()["paths"]

    def media(path: str) -> set[str]:
        return set(paths[path]["get"]["responses"]["200"]["content"])

    assert media("/reports/members/{member_id}/{period}.csv") == {"text/csv"}
    assert media("/reports/units/{unit_id}/{period}.csv") == {"text/csv"}
    assert media("/targets/{target_id}/burnup.svg") == {"image/svg+xml"}
    assert media("/reports/units/{unit_id}/{period}") == {"application/json", "text/csv"}  # ?format=csv, deprecated
    assert media("/metrics") == {"text/plain"}


def test_the_change_feed_has_one_schema_per_event_type_with_its_fields() -> None:
    classes = {cls.__qualname__: cls for cls in discovered_event_classes().values()}
    events = document()["components"]["schemas"]["EventsOut"]["properties"]["events"]["items"]
    mapping = events["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(classes) == sorted(EVENT_MODELS)
    schemas = document()["components"]["schemas"]
    envelope = {"originator_id", "originator_version", "timestamp", "actor", "effective_at", "originator_topic"}
    for name, cls in classes.items():
        variant = schemas[mapping[name].rsplit("/", 1)[1]]
        assert variant["properties"]["type"]["const"] == name
        data = schemas[variant["properties"]["data"]["$ref"].rsplit("/", 1)[1]]
        fields = {f.name for f in dataclasses.fields(cls)} - envelope
        assert set(data["properties"]) == fields == set(data["required"]), name
    money = schemas["DealWonData"]["properties"]["amount"]
    assert money["type"] == "string"  # decimals travel as strings, never floats


def test_every_event_type_is_served_in_its_own_shape(api: Api) -> None:
    write_every_event(api.planning)
    served: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        page = api.get("viewer", "/events", limit=500, **({"cursor": cursor} if cursor else {})).json()
        for event in page["events"]:
            served.setdefault(event["type"], event)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    classes = {cls.__qualname__: cls for cls in discovered_event_classes().values()}
    assert sorted(served) == sorted(classes)
    for name, event in served.items():
        model = EVENT_MODELS[name]
        model.model_validate(event)  # exactly its schema: no field missing, none extra
    # The deal was reassigned to Ana before it was lost, reopened in negotiation and won.
    assert served["Deal.Won"]["data"] == {"amount": "101000.10", "owner_id": str(ident("ana")),
                                          "previous_stage": "negotiation"}
    revised = served["Plan.TargetRevised"]["data"]
    assert (revised["committed"], revised["previous_committed"], revised["reason"]) == (
        "150000.00", "200000.00", "slow spring")  # Q2 was 0.2 of the year's 1,000,000


def test_audit_changes_are_typed(api: Api) -> None:
    schemas = document()["components"]["schemas"]
    changes = schemas["AuditRowOut"]["properties"]["changes"]
    assert changes["additionalProperties"] == {"$ref": "#/components/schemas/AuditChangeOut"}
    assert set(schemas["AuditChangeOut"]["required"]) == {"before", "after"}
    api.planning.rename_unit(api.world.east, name="East Region", actor="setup")
    rows = api.get("viewer", "/audit", entity="unit", entity_id=str(api.world.east), wait_for_position=api.head()
                   ).json()["rows"]
    assert rows[-1]["changes"] == {"name": {"before": "East", "after": "East Region"}}


# --- the headers answered are the headers declared ------------------------------------------------


def _operation(method: str, url: str) -> tuple[str, dict[str, Any]]:
    path = httpx2.URL(url).path
    matches = []
    for template, item in document()["paths"].items():
        pattern = "^" + re.sub(r"\\\{.*?\\\}", "[^/]+", re.escape(template)) + "$"
        if method.lower() in item and re.match(pattern, path):
            matches.append(template)
    assert matches, (method, path)
    template = max(matches, key=lambda t: len(re.sub(r"\{.*?\}", "", t)))  # ….csv before {period}
    return template, document()["paths"][template][method.lower()]


def check_headers(response: httpx2.Response) -> None:
    """What the response carries of the headers the API declares, exactly as declared for it."""
    template, op = _operation(response.request.method, str(response.request.url))
    declared = op["responses"].get(str(response.status_code), {}).get("headers", {})
    answered = {h for h in ANSWERED_HEADERS if h in response.headers}
    assert answered == {h.lower() for h in declared} & set(ANSWERED_HEADERS), (
        response.request.method, template, response.status_code, answered, set(declared))


class Checked(Api):
    """The API helper, checking the headers of every answer against the document."""

    def request(self, role: str, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        response = super().request(role, method, path, **kwargs)
        if path not in ("/healthz", "/readyz"):
            check_headers(response)
        return response


def test_the_headers_answered_are_the_headers_declared(api: Api) -> None:
    api = Checked(api.client, api.world)
    w = api.world
    plan = api.ok("manager", "/plans", {"name": "East 2026", "span": "2026", "currency": "EUR", "unit_id": str(w.east)})
    target = api.ok("manager", f"/plans/{plan['id']}/targets", {
        "metric": "revenue", "period": "2026-Q2", "scope": {"member_id": str(w.ann)}, "committed": "1000"},
        if_match=plan["version"])
    assert api.post("manager", f"/plans/{plan['id']}/publish", {}, if_match=plan["version"]).status_code == 412
    assert api.post("manager", f"/plans/{plan['id']}/publish", {}).status_code == 428
    api.ok("manager", f"/plans/{plan['id']}/publish", {}, if_match=target["version"])
    deal = open_deal(api, w.ann, amount="400")
    api.ok("rep", f"/deals/{deal}/win", {}, if_match=api.version(deal))
    task = create_task(api, w.ann)
    activity = api.ok("rep", "/activities", {"kind": "call", "member_id": str(w.ann)})
    assert api.client.post("/units", content=b"name=Pop-up", headers=api.headers(
        "admin", {"Content-Type": "text/plain"})).status_code == 415
    check_headers(api.client.post("/units", content=b"name=Pop-up", headers=api.headers("admin", {
        "Content-Type": "text/plain"})))
    assert api.get("anon", "/progress").status_code == 401
    api.services.wait_for(api.head())
    ids = {"plan_id": plan["id"], "target_id": target["target_id"], "unit_id": str(w.east), "member_id": str(w.ann),
           "deal_id": str(deal), "task_id": str(task), "product_id": str(w.product), "account_id": str(w.account),
           "activity_id": activity["id"], "alert_id": str(w.ann), "version": "1",
           "period": f"{date.today():%G-W%V}"}
    queries = {"get_funnel": {"span_start": "2026-04-01T00:00:00Z", "span_end": "2026-07-01T00:00:00Z"},
               "compare_plan_versions": {"from_version": 0, "to_version": 1},
               "get_attribution": {"from": "2026-04-01", "to": date.today().isoformat()}}
    statuses = {}
    for path, method, op in operations():
        if method != "get" or path in ("/healthz", "/readyz", "/openapi.json"):
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        response = api.request("admin", "GET", url, params=queries.get(op["operationId"]))
        statuses[op["operationId"]] = response.status_code
    assert {k: v for k, v in statuses.items() if v != 200} == {"get_alert": 404}  # no alert was ever raised

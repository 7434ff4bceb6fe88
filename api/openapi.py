"""The OpenAPI document: what generated clients, front ends and Swagger UI build on.

Operation ids are the route functions' names, which are the domain's verbs (``revise_target``,
``win_deal``, ``get_progress``); ``tests/test_openapi.py`` holds the list, so renaming one is
a visible API change. The document also says what FastAPI cannot see by itself:

- ``If-Match`` is required on every change (the server answers 428 without it; FastAPI sees
  an optional header, so that the 428 is ours and not a validation error);
- commands answer ``ETag`` and ``Location``; a 412 answers the current ``ETag``; a 503 a
  ``Retry-After``; a 401 ``WWW-Authenticate``;
- reads at a log position answer ``Salesplan-Position`` (declared by each route with
  ``POSITIONED``), entity reads an ``ETag`` (``VERSIONED``);
- a body that is not JSON is refused with 415;
- problems are ``#/components/schemas/Problem`` with their items beside them (not nested).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api.deps import POSITION_HEADER
from api.errors import PROBLEM_MEDIA_TYPE
from api.schemas import Problem

_STRING: Final = {"type": "string"}

HEADERS: Final[dict[str, dict[str, Any]]] = {
    "ETag": {"description": 'The entity\'s version as an entity tag, e.g. "3": send it back as If-Match',
             "schema": _STRING},
    "Location": {"description": "Where the entity is read", "schema": _STRING},
    POSITION_HEADER: {"description": "The log position this answer was computed from (pass it as "
                                     "known_at_position to ask again and get the same answer)",
                      "schema": {"type": "integer", "minimum": 0}},
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}},
    "WWW-Authenticate": {"description": "The authentication scheme (Bearer)", "schema": _STRING},
}


def _headers(*names: str) -> dict[str, Any]:
    return {name: HEADERS[name] for name in names}


POSITIONED: Final[dict[int | str, dict[str, Any]]] = {200: {"headers": _headers(POSITION_HEADER)}}
"""``responses=`` of a read that answers ``Salesplan-Position``."""

VERSIONED: Final[dict[int | str, dict[str, Any]]] = {200: {"headers": _headers("ETag")}}
"""``responses=`` of an entity read that answers its ``ETag``."""


def operation_id(route: APIRoute) -> str:
    """The route function's name: a snake_case domain verb, stable because the tests pin the list."""
    return route.name


def _problem_schemas() -> dict[str, Any]:
    """``Problem`` and the schemas it refers to, each a component of its own."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    components["Problem"] = schema
    return components


def _problem(description: str, *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    if headers:
        response["headers"] = _headers(*headers)
    return response


def _complete(method: str, operation: dict[str, Any]) -> None:
    parameters = operation.get("parameters", [])
    names = {p["name"] for p in parameters if p.get("in") == "header"}
    responses: dict[str, Any] = operation["responses"]
    for parameter in parameters:
        if parameter.get("in") == "header" and parameter["name"] == "If-Match":
            parameter["required"] = True
            parameter["schema"] = {"type": "string", "maxLength": 40, "examples": ['"3"', "*"]}
            parameter["description"] = ('The ETag of the entity as you read it, e.g. "3"; "*" for any version '
                                        "(428 without it, 412 when it is stale)")
    # The shared problem responses, kept only where they can happen.
    if "If-Match" not in names:
        responses.pop("412", None)
        responses.pop("428", None)
    if method not in ("post", "put", "patch"):
        responses.pop("413", None)  # the body limit applies to these methods, with a body model or without
    if method == "get":
        responses.pop("409", None)
    if "If-Match" in names:
        responses["412"] = _problem("The entity changed since it was read: the body and the ETag name its version",
                                    "ETag")
        responses["428"] = _problem("Send If-Match with the ETag you read")
    if "Idempotency-Key" in names:  # every command: it answers the entity's new version and where to read it
        for status, response in responses.items():
            if status in ("200", "201"):
                response.setdefault("headers", {}).update(_headers("ETag", "Location"))
    if "requestBody" in operation:
        responses["415"] = _problem("The body is not JSON (send Content-Type: application/json)")
    if "503" in responses:
        responses["503"].setdefault("headers", {}).update(_headers("Retry-After"))
    if "401" in responses:
        responses["401"].setdefault("headers", {}).update(_headers("WWW-Authenticate"))


def build(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI 3.1 document."""
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                         routes=app.routes)
    schema.setdefault("components", {}).setdefault("schemas", {}).update(_problem_schemas())
    for path in schema["paths"].values():
        for method, operation in path.items():
            _complete(method, operation)
    return schema

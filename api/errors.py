"""The one place where errors become HTTP: RFC 9457 problems (``application/problem+json``).

    domain ValidationError           422  the input is malformed
    domain RuleViolation             422  well formed, but a business rule refuses it
                                          (except a lost race — ``concurrency.conflict`` or an id
                                          already taken (``*.id_taken``) — which is 409, whatever the timing)
    domain NotFound                  404  (also: another rep's deal or task)
    domain VersionConflict           412  when If-Match named a version (the precondition failed, whether the
                                          other writer came before the read or during the write);
                                          409 with ``If-Match: *`` (a lost race); the body names the current version
    StoreUnavailable, DB errors      503  with Retry-After
    request validation               422  one item per error, each with a JSON pointer (body) or parameter name
                                     415  when it is the body that failed and it was not sent as JSON
    ApiProblem                       its own status, raised by the API layer: 401 (token), 403 (role),
                                          404 (plan version), 413 (body), 422 (query), 428 (If-Match), 503 (lag)
    anything else                    500  logged; never for bad input

A problem's ``type`` is ``urn:salesplan:problem:<rule>``, ``rule`` the domain's stable rule id,
``pointer`` the JSON pointer of the offending body field (``parameter`` for a query, path or
header parameter). Domain details (``allowed``, ``allowed_next_stages``, ``current_version``…)
are extension members.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy.exc
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from domain.application import StoreUnavailable
from domain.errors import DomainError, NotFound, RuleViolation, VersionConflict

log = logging.getLogger("salesplan.api")

PROBLEM_TYPE: Final = "urn:salesplan:problem:"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
HEADER_FIELDS: Final = frozenset({"Idempotency-Key", "If-Match"})
TITLES: Final = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 412: "Precondition failed", 413: "Request too large", 415: "Unsupported media type",
    422: "Unprocessable request",
    428: "Precondition required", 500: "Internal error", 503: "Service unavailable",
}
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class ApiProblem(Exception):
    """A refusal decided by the API layer itself (authentication, authorization, preconditions)."""

    def __init__(
        self, status: int, rule: str, detail: str, *, pointer: str | None = None, parameter: str | None = None,
        headers: Mapping[str, str] | None = None, **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.rule = rule
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.headers = dict(headers or {})
        self.extensions = extensions


def _safe(value: Any) -> Any:
    """JSON-safe and encodable: lone surrogates (which UTF-8 cannot carry) become U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {_safe(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _safe(str(value))


def problem_response(
    status: int, rule: str, detail: str, *, instance: str | None = None, pointer: str | None = None,
    parameter: str | None = None, headers: Mapping[str, str] | None = None, **extensions: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + rule, "title": TITLES.get(status, "Error"), "status": status, "detail": detail,
        "instance": instance, "rule": rule,
    }
    if pointer is not None:
        body["pointer"] = pointer
    if parameter is not None:
        body["parameter"] = parameter
    for key, value in extensions.items():
        if value is not None and key not in body:
            body[key] = value
    content = json.dumps(_safe(body), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(content, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {}))


def field_location(field: str | None) -> dict[str, str | None]:
    """A domain error's field (``scope/unit_id``, ``parts/0``, ``Idempotency-Key``) as pointer or parameter."""
    if field is None:
        return {"pointer": None, "parameter": None}
    if field in HEADER_FIELDS:
        return {"pointer": None, "parameter": field}
    return {"pointer": "/" + field.lstrip("/"), "parameter": None}


def domain_status(error: DomainError, version_named: bool) -> int:
    """``version_named``: the request's If-Match named a version (not ``*``, not absent)."""
    if isinstance(error, VersionConflict):
        return 412 if version_named else 409
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, RuleViolation) and (error.rule == "concurrency.conflict" or error.rule.endswith(".id_taken")):
        return 409  # someone else got there first: the same answer whether they committed before or during
    return 422  # ValidationError and RuleViolation: the request cannot be processed as it is


def _domain_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, DomainError)
    if_match = request.headers.get("if-match")
    status = domain_status(error, if_match is not None and if_match.strip() != "*")
    extensions = dict(error.details)
    headers = {}
    if isinstance(error, VersionConflict):
        headers["ETag"] = f'"{error.current_version}"'
    return problem_response(status, error.rule, error.message, instance=request.url.path, headers=headers,
                            **field_location(error.field), **extensions)


def _api_problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiProblem)
    return problem_response(error.status, error.rule, error.detail, instance=request.url.path, pointer=error.pointer,
                            parameter=error.parameter, headers=error.headers, **error.extensions)


def _unavailable(request: Request, error: Exception) -> Response:
    log.warning("store unavailable on %s: %s", request.url.path, error)
    return problem_response(503, "store.unavailable", "the database is unavailable or busy: retry shortly",
                            instance=request.url.path, headers={"Retry-After": "1"})


def _pointer(parts: Sequence[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


_QUOTED: Final = re.compile(r"'([^']*)'")


def validation_items(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as problem items: a JSON pointer for body fields, a name for parameters."""
    items: list[dict[str, Any]] = []
    for error in errors[:50]:
        loc = list(error.get("loc", ()))
        kind = str(error.get("type", "invalid"))
        where, rest = (str(loc[0]), loc[1:]) if loc else ("body", [])
        item: dict[str, Any] = {"rule": kind if "." in kind else f"input.{kind}"}
        message = str(error.get("msg", "is invalid"))
        if kind == "extra_forbidden":
            message = "unknown field: this request does not accept it"
        elif kind == "missing":
            message = "is required"
        elif kind == "string_unicode":  # pydantic's own refusal of a lone surrogate: the same rule as ours
            item["rule"] = "text.invalid_character"
            message = "must not contain a NUL character or a lone surrogate"
        elif kind == "json_invalid":
            message = "the body is not valid JSON"
            rest = []
        elif kind in ("literal_error", "enum"):
            expected = str((error.get("ctx") or {}).get("expected", ""))
            item["allowed"] = _QUOTED.findall(expected)
            message = f"must be one of: {', '.join(item['allowed'])}"
        if where == "body":
            item["pointer"] = _pointer(rest)
            label = item["pointer"] or "the body"
        else:
            item["parameter"] = str(rest[0]) if rest else where
            label = f"{where} parameter {item['parameter']}"
        item["detail"] = f"{label}: {message}"
        items.append(item)
    return items


_JSON_MEDIA_TYPE: Final = re.compile(r"^application/([\w.+-]+\+)?json$")


def _not_json_body(request: Request) -> str | None:
    """The media type of a body sent as something other than JSON (None: JSON, or no body at all).

    FastAPI reads a body as JSON only when it says so (``application/json`` or ``…+json``).
    """
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return None if _JSON_MEDIA_TYPE.match(media_type) or not has_body else media_type


def _request_validation(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    media_type = _not_json_body(request)
    if media_type is not None and any(tuple(e.get("loc", ("body",)))[:1] == ("body",) for e in error.errors()):
        sent = f"it was sent as {media_type}" if media_type else "it was sent without a Content-Type"
        return problem_response(415, "request.unsupported_media_type",
                                f"the body must be JSON (Content-Type: application/json); {sent}",
                                instance=request.url.path, parameter="Content-Type")
    items = validation_items(error.errors())
    first = items[0] if items else {"rule": "input.invalid", "detail": "the request is invalid"}
    detail = "; ".join(i["detail"] for i in items[:5]) + (f" (and {len(items) - 5} more)" if len(items) > 5 else "")
    return problem_response(
        422, first["rule"], detail or first["detail"], instance=request.url.path, pointer=first.get("pointer"),
        parameter=first.get("parameter"), errors=items,
    )


def _http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400:
        # FastAPI's "error parsing the body" (e.g. not UTF-8): the same answer as a body that is not JSON.
        return problem_response(422, "input.json_invalid", f"the body cannot be read: {error.detail}",
                                instance=request.url.path, pointer="")
    rule = {404: "route.not_found", 405: "route.method_not_allowed"}.get(error.status_code, "http.error")
    return problem_response(error.status_code, rule, str(error.detail), instance=request.url.path,
                            headers=dict(error.headers or {}))


def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return problem_response(500, "internal", "an unexpected error occurred; it has been logged",
                            instance=request.url.path)


def install(app: FastAPI) -> None:
    """Register every mapping on the app."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.add_exception_handler(StoreOperationalError, _unavailable)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _unavailable)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)


PROBLEM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {"description": TITLES[status], "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for status in (401, 403, 404, 409, 412, 413, 422, 428, 503)
}
"""Every operation may answer these; declared so that the OpenAPI schema tells the truth."""

"""HTTP's own rules, as a client library expects them: media types, If-Match: *, one status for one cause."""

from __future__ import annotations

import contextlib
import threading
from typing import Any
from uuid import uuid4

import httpx2
import pytest

from api.errors import domain_status
from domain.errors import NotFound, RuleViolation, ValidationError, VersionConflict
from tests.api_helpers import Api, api_fixture  # noqa: F401 — the `api` fixture


def raw_post(api: Api, path: str, content: bytes, content_type: str | None, if_match: str | None = None
             ) -> httpx2.Response:
    headers = api.headers("admin", {"Content-Type": content_type} if content_type else {})
    if if_match is not None:
        headers["If-Match"] = if_match
    return api.client.post(path, content=content, headers=headers)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "text/plain; charset=utf-8", None])
def test_a_body_that_is_not_json_is_415_and_writes_nothing(api: Api, content_type: str | None) -> None:
    head = api.head()
    refused = raw_post(api, "/units", b'{"name": "Pop-up"}', content_type)
    assert refused.status_code == 415
    problem = refused.json()
    assert refused.headers["content-type"] == "application/problem+json"
    assert (problem["rule"], problem["parameter"]) == ("request.unsupported_media_type", "Content-Type")
    assert (content_type or "without a Content-Type").split(";")[0] in problem["detail"]
    version = api.version(api.world.east)
    change = raw_post(api, f"/units/{api.world.east}/rename", b"name=East", content_type, if_match=f'"{version}"')
    assert change.status_code == 415
    assert api.head() == head


def test_json_in_any_of_its_spellings_is_read(api: Api) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8", "application/vnd.salesplan+json"):
        created = raw_post(api, "/units", b'{"name": "Pop-up", "parent_id": "%s"}' % str(api.world.east).encode(),
                           content_type)
        assert created.status_code == 201, (content_type, created.text)
    malformed = raw_post(api, "/units", b'{"name": ', "application/json")
    assert (malformed.status_code, malformed.json()["rule"]) == (422, "input.json_invalid")
    missing = raw_post(api, f"/plans/{uuid4()}/publish", b"", "text/plain", if_match='"1"')
    assert missing.status_code == 422  # no body at all: nothing of the wrong type was sent


def test_if_match_star_matches_any_version_of_an_entity_that_exists(api: Api) -> None:
    east = api.world.east
    renamed = api.post("manager", f"/units/{east}/rename", {"name": "East Region"}, if_match="*")
    assert renamed.status_code == 200
    assert renamed.json()["version"] == 2 and renamed.headers["etag"] == '"2"'
    again = api.post("manager", f"/units/{east}/rename", {"name": "East"}, if_match="*")
    assert again.status_code == 200 and again.json()["version"] == 3
    ghost = api.post("admin", f"/units/{uuid4()}/rename", {"name": "Nowhere"}, if_match="*")
    assert ghost.status_code == 404
    stale = api.post("manager", f"/units/{east}/rename", {"name": "West"}, if_match=2)
    assert (stale.status_code, stale.json()["current_version"], stale.headers["etag"]) == (412, 3, '"3"')


def test_one_status_for_one_cause() -> None:
    conflict = VersionConflict("x", 2, 3)
    assert domain_status(conflict, version_named=True) == 412  # the version the client named is not current
    assert domain_status(conflict, version_named=False) == 409  # If-Match: * and someone else wrote in between
    assert domain_status(RuleViolation("concurrency.conflict", "raced"), version_named=False) == 409
    assert domain_status(RuleViolation("unit.id_taken", "taken", "id"), version_named=False) == 409
    assert domain_status(RuleViolation("target.id_taken", "taken", "target_id"), version_named=True) == 409
    assert domain_status(RuleViolation("deal.closed", "closed"), version_named=True) == 422
    assert domain_status(ValidationError("money.negative", "negative"), version_named=False) == 422
    assert domain_status(NotFound("unit", "x"), version_named=False) == 404


def test_two_creates_of_one_id_race_and_the_loser_always_gets_409(api: Api, monkeypatch: Any) -> None:
    """Both pass the 'id taken?' check before either commits (on PostgreSQL): the loser still gets 409."""
    planning = api.planning
    check = planning._check_new
    both_checked = threading.Barrier(2, timeout=2)

    def wait_for_the_other(*args: Any, **kwargs: Any) -> None:
        check(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait()  # SQLite serialises writers from BEGIN: the other cannot get here meanwhile

    monkeypatch.setattr(planning, "_check_new", wait_for_the_other)
    unit_id = str(uuid4())
    answers: list[httpx2.Response] = []
    threads = [threading.Thread(target=lambda name=name: answers.append(api.post(
        "admin", "/units", {"id": unit_id, "name": name}))) for name in ("North", "South")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [201, 409]
    loser = next(a for a in answers if a.status_code == 409).json()
    raced = api.services.database.is_postgres
    assert loser["rule"] == ("concurrency.conflict" if raced else "unit.id_taken")
    monkeypatch.undo()
    later = api.post("admin", "/units", {"id": unit_id, "name": "West"})
    assert (later.status_code, later.json()["rule"]) == (409, "unit.id_taken")

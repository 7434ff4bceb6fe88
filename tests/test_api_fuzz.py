"""Property-based fuzzing of the OpenAPI schema with schemathesis, in-process, every operation, every role.

Whatever schemathesis generates from the published schema — and, in negative mode, whatever
breaks it — the API never answers 5xx, and every answer (status, content type, body)
conforms to the schema. The schema is the app's own ``/openapi.json``; requests go through
the ASGI app directly (no server, no sockets), on the app's lifespan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import ASGIClient
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from domain.persistence import close_database
from tests.api_helpers import Api, running_api
from tests.conftest import POSTGRES_URL, reset_postgres

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_ROLES = ("admin", "manager", "rep", "viewer")
EXAMPLES = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 3}  # the whole suite well under 2 minutes


@pytest.fixture(scope="module")
def fuzz_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app per backend for the whole module: fuzzing does not need a clean slate per operation."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'salesplan.db'}"
    else:
        request.getfixturevalue("postgres_available")
        reset_postgres()
        url = POSTGRES_URL
    with running_api(url, read_wait_max_seconds=1.0) as running:
        yield running
    close_database(url)


def _operations(api: Api) -> list[Any]:
    app: Any = api.client.app
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


def _known_ids(api: Api) -> dict[str, str]:
    """Real ids, so that some generated calls reach past the 404s into the commands."""
    w = api.world
    return {"unit_id": str(w.east_team), "member_id": str(w.ann), "product_id": str(w.product),
            "account_id": str(w.account)}


def _fuzz(api: Api, operation: Any, role: str, mode: GenerationMode, failures: list[str]) -> None:
    """Run one operation as one role; collect what fails instead of stopping at the first operation."""
    app: Any = api.client.app
    session = ASGIClient(app)  # not entered: the TestClient already runs the app's lifespan
    headers = api.headers(role)
    known = _known_ids(api)
    fixed = {p.name: known[p.name] for p in operation.path_parameters if p.name in known}
    real_ids = st.sampled_from([False, True]) if fixed else st.just(False)

    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), use_real=real_ids)
    def run(case: Any, use_real: bool) -> None:
        if use_real:
            case.path_parameters = {**(case.path_parameters or {}), **fixed}
        try:
            case.call_and_validate(session=session, headers=headers, checks=CHECKS)
        except (AssertionError, Exception, BaseExceptionGroup) as error:  # schemathesis raises FailureGroup
            failures.append(f"{operation.label} as {role}: {type(error).__name__}: {str(error)[:1500]}")

    try:
        run()
    except Unsatisfiable:
        # Nothing in this operation can be made invalid (no parameters, no body): the positive run covers it.
        raw = operation.definition.raw
        assert mode is GenerationMode.NEGATIVE and not raw.get("parameters") and "requestBody" not in raw


# Both modes on SQLite; on PostgreSQL (which refuses NUL and has its own limits) the positive run.
CASES = [
    *[pytest.param("sqlite", role, mode, id=f"sqlite-{role}-{mode.value}")
      for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) for role in FUZZ_ROLES],
    *[pytest.param("postgres", role, GenerationMode.POSITIVE, id=f"postgres-{role}-positive",
                   marks=pytest.mark.postgres) for role in FUZZ_ROLES],
]


@pytest.mark.parametrize(("fuzz_api", "role", "mode"), CASES, indirect=["fuzz_api"])
def test_no_5xx_and_every_answer_conforms(fuzz_api: Api, role: str, mode: GenerationMode) -> None:
    failures: list[str] = []
    operations = _operations(fuzz_api)
    assert len(operations) >= 55
    for operation in operations:
        _fuzz(fuzz_api, operation, role, mode, failures)
    assert not failures, "\n\n".join(failures[:10])

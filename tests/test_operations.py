"""What an operator runs: the compose file, the image's install, the command line, and no secret printed.

The command line is run as a user runs it, in a subprocess on a database of the test's own (no
terminal: that is what scripts and logs see). The install of the image itself — `pip install .`
without extras, in a fresh virtualenv, from what the Dockerfile copies — is replayed by
`.ci/install_check.py`, which CI runs beside this suite.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from api.redaction import RedactingFilter, mask_url, redact
from api.settings import Settings, env_name
from api.tokens import verify_token
from domain.persistence import open_database
from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pa55-w0rd-never-shown"
TOKEN_RE = re.compile(r"sp_([0-9a-f]{16})_[A-Za-z0-9_-]{20,100}")


def salesplan(*args: str, url: str, cwd: Path, extra: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESPLAN_")}
    env |= {"SALESPLAN_DATABASE_URL": url, **(extra or {})}
    return subprocess.run([sys.executable, "-c", "from api.cli import main; main()", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ops.db'}"


# --- the compose file and the image -----------------------------------------------------------------


@pytest.mark.parametrize("schema", [
    ["--builtin-schema", "vendor.compose-spec"],  # the current compose spec: Compose v2
    ["--schemafile", str(ROOT / "tests/compose/compose-spec-docker-compose-1.29.2.json")],  # what v1.29 validates with
], ids=["compose-spec", "docker-compose-1.29"])
def test_the_compose_file_validates_against_the_compose_schemas(schema: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", *schema, str(ROOT / "docker-compose.yml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ROOT / "tests/compose/LICENSE.docker-compose").read_text().lstrip().startswith("Apache License")


def test_a_compose_file_v1_29_refuses_is_caught(tmp_path: Path) -> None:
    refused = tmp_path / "docker-compose.yml"
    refused.write_text("name: salesplan\n" + (ROOT / "docker-compose.yml").read_text())
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--schemafile",
                           str(ROOT / "tests/compose/compose-spec-docker-compose-1.29.2.json"), str(refused)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "'name' does not match" in done.stdout


def test_the_image_installs_the_package_without_extras_from_what_it_copies() -> None:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    words = [shlex.split(line, comments=True) for line in lines]
    copied = {name.rstrip("/") for w in words if w and w[0] == "COPY" for name in w[1:-1]}
    installs = [" ".join(w[1:]).split("&&")[0].strip() for w in words if w and w[0] == "RUN" and "pip" in w]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert installs == ["pip install ."]
    assert {"pyproject.toml", project["project"]["readme"], *packages} <= copied
    user = [w for w in words if w and w[0] == "USER"]
    assert user and user[-1][1] != "root"
    cmd = next(line for line in lines if line.startswith("CMD"))
    assert cmd.split(None, 1)[1].startswith('["salesplan"')  # exec form: SIGTERM reaches the process


# --- the command line -----------------------------------------------------------------------------


def test_version_and_every_setting_in_help(sqlite_url: str, tmp_path: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert salesplan("--version", url=sqlite_url, cwd=tmp_path).stdout == f"salesplan {version}\n"
    shown = salesplan("--help", url=sqlite_url, cwd=tmp_path).stdout
    missing = [env_name(name) for name in Settings.model_fields if env_name(name) not in shown]
    assert missing == []
    assert "SALESPLAN_DATABASE_URL (default sqlite:///salesplan.db)" in shown


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [env_name(name) for name in Settings.model_fields if f"`{env_name(name)}`" not in readme] == []


def test_token_create_prints_the_secret_alone_and_touches_only_the_tokens_table(sqlite_url: str,
                                                                                 tmp_path: Path) -> None:
    done = salesplan("token", "create", "--role", "viewer", "--label", "bi", url=sqlite_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    match = TOKEN_RE.fullmatch(done.stdout.rstrip("\n"))
    assert match is not None and done.stdout.count("\n") == 1, done.stdout
    assert f"token {match.group(1)} created" in done.stderr and done.stdout.strip() not in done.stderr
    database = open_database(sqlite_url)
    info = verify_token(database, done.stdout.strip())
    assert info is not None and (info.role, info.label) == ("viewer", "bi")
    # Why it is quick: no projection, tracking row or alert table is set up to issue a token.
    assert set(sa.inspect(database.engine).get_table_names()) == {"salesplan_tokens"}


def test_token_revoke_and_list(sqlite_url: str, tmp_path: Path) -> None:
    secret = salesplan("token", "create", "--role", "admin", url=sqlite_url, cwd=tmp_path).stdout.strip()
    token_id = TOKEN_RE.fullmatch(secret).group(1)  # type: ignore[union-attr]
    unknown = salesplan("token", "revoke", "0123456789abcdef", url=sqlite_url, cwd=tmp_path)
    assert unknown.returncode == 1 and "no token '0123456789abcdef'" in unknown.stderr
    revoked = salesplan("token", "revoke", token_id, url=sqlite_url, cwd=tmp_path)
    assert revoked.returncode == 0 and f"revoked {token_id}" in revoked.stderr
    again = salesplan("token", "revoke", token_id, url=sqlite_url, cwd=tmp_path)
    assert again.returncode == 0 and "already revoked" in again.stderr
    listed = json.loads(salesplan("token", "list", "--json", url=sqlite_url, cwd=tmp_path).stdout)
    (token,) = listed["tokens"]
    assert (token["id"], token["role"], token["revoked_at"] is not None) == (token_id, "admin", True)
    assert secret.split("_")[2] not in json.dumps(listed)
    plain = salesplan("token", "list", url=sqlite_url, cwd=tmp_path).stdout.splitlines()
    assert plain[0].split() == ["id", "role", "member", "label", "created", "revoked"]
    assert plain[1].startswith(token_id)


def test_status_retry_and_demo(sqlite_url: str, tmp_path: Path) -> None:
    demo = salesplan("demo", url=sqlite_url, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    written = [int(m.replace(",", "")) for m in re.findall(r"demo: ([\d,]+) events written", demo.stderr)]
    assert written[:3] == [500, 1000, 1500] and written[-1] > 1500  # progress while it writes, then the total
    assert "events" in demo.stdout and f"{written[-1]}" in demo.stdout.replace(",", "")

    status = json.loads(salesplan("status", "--json", url=sqlite_url, cwd=tmp_path).stdout)
    names = [p["name"] for p in status["projections"]]
    assert "revision_reasons" in names and status["database"] == sqlite_url
    assert {p["position"] for p in status["projections"]} == {status["head"]}  # the demo caught them up
    table = salesplan("status", url=sqlite_url, cwd=tmp_path).stdout
    assert all(re.search(rf"^{name}\s+live\s+{status['head']}\b", table, re.M) for name in names), table

    unknown = salesplan("retry", "nope", url=sqlite_url, cwd=tmp_path)
    assert unknown.returncode == 1 and "no projection 'nope'" in unknown.stderr and "revision_reasons" in unknown.stderr
    live = salesplan("retry", "audit", url=sqlite_url, cwd=tmp_path)
    assert live.returncode == 0 and "nothing to retry" in live.stderr
    with open_database(sqlite_url).engine.begin() as conn:
        conn.execute(sa.text("UPDATE salesplan_projections SET status = 'failed', error = 'KeyError: x', "
                             "error_position = 7 WHERE name = 'audit'"))
    failed = salesplan("status", "--json", url=sqlite_url, cwd=tmp_path).stdout
    assert [p["error_position"] for p in json.loads(failed)["projections"] if p["name"] == "audit"] == [7]
    retried = salesplan("retry", "audit", url=sqlite_url, cwd=tmp_path)
    assert retried.returncode == 0 and "error at position 7 cleared" in retried.stderr
    after = json.loads(salesplan("status", "--json", url=sqlite_url, cwd=tmp_path).stdout)
    assert [p["status"] for p in after["projections"] if p["name"] == "audit"] == ["live"]


# --- no secret printed -------------------------------------------------------------------------------


def test_redaction_masks_url_and_dsn_passwords() -> None:
    assert mask_url(f"postgresql+psycopg2://salesplan:{PASSWORD}@db:5432/salesplan") == \
        "postgresql+psycopg2://salesplan:***@db:5432/salesplan"
    assert mask_url("postgresql+psycopg2://root@127.0.0.1:5432/x") == "postgresql+psycopg2://root@127.0.0.1:5432/x"
    assert mask_url("sqlite:///salesplan.db") == "sqlite:///salesplan.db"
    assert redact(f"host=db password={PASSWORD} dbname=x") == "host=db password=*** dbname=x"
    assert redact(f"could not parse 'postgresql://u:{PASSWORD}@h/db'") == "could not parse 'postgresql://u:***@h/db'"
    assert PASSWORD not in repr(Settings(database_url=f"postgresql://u:{PASSWORD}@h/db"))


def test_serve_masks_every_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    import logging.config

    from api.cli import _log_config

    saved, level = list(logging.getLogger().handlers), logging.getLogger().level
    logging.config.dictConfig(_log_config())
    try:
        url = f"postgresql://u:{PASSWORD}@h/db"
        logging.getLogger("sqlalchemy.pool").warning("reconnecting to %s", url)  # a library's, through the root
        logging.getLogger("salesplan.api").info("on %s", url)
        logging.getLogger("uvicorn.error").error("failed: %s", url)
    finally:  # leave logging as pytest had it: other tests capture through the root logger
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "salesplan"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
        root = logging.getLogger()
        root.handlers[:] = saved
        root.setLevel(level)
    logged = capsys.readouterr().err
    assert logged.count("postgresql://u:***@h/db") == 3 and PASSWORD not in logged


def test_log_records_are_redacted_and_still_formatted() -> None:
    from uvicorn.logging import AccessFormatter

    url = f"postgresql://u:{PASSWORD}@h/db"
    record = logging.LogRecord("salesplan", logging.ERROR, __file__, 1, "cannot reach %s", (url,), None)
    try:
        raise RuntimeError(f"connect to {url} failed")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert PASSWORD not in text and "postgresql://u:***@h/db" in text and "RuntimeError: connect to" in text
    # uvicorn's access log formats from record.args: the filter keeps them a tuple.
    access = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/readyz", "1.1", 200), None)
    assert RedactingFilter().filter(access)
    assert AccessFormatter("%(request_line)s %(status_code)s").format(access) == "GET /readyz HTTP/1.1 200 OK"


@pytest.mark.parametrize(("url", "code", "says"), [
    # Nothing listens on port 1.
    (f"postgresql+psycopg2://root:{PASSWORD}@127.0.0.1:1/nowhere", 1, "salesplan: the database is unavailable: "),
    (f"postgresql+psycopg2://root:{PASSWORD}@127.0.0.1:notaport/x", 2,
     "SALESPLAN_DATABASE_URL=postgresql+psycopg2://root:***@127.0.0.1:notaport/x cannot be used: "),
], ids=["unreachable", "malformed"])
def test_errors_say_what_failed_without_the_password(url: str, code: int, says: str, tmp_path: Path) -> None:
    for command in (["status", "--json"], ["token", "create", "--role", "admin"]):
        done = salesplan(*command, url=url, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (code, ""), done
        assert done.stderr.startswith(says) and done.stderr.count("\n") == 1, done.stderr
        assert PASSWORD not in done.stderr
    debug = salesplan("status", url=url, cwd=tmp_path, extra={"SALESPLAN_DEBUG": "1"})
    assert PASSWORD not in debug.stdout + debug.stderr
    assert ("Traceback" in debug.stderr) == (code == 1)  # a usage error needs no traceback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.postgres
def test_serve_and_status_show_the_postgres_url_masked(postgres_available: bool, tmp_path: Path) -> None:
    from tests.conftest import reset_postgres

    reset_postgres()
    # Trust authentication accepts any password: this one is only there to be hidden.
    url = POSTGRES_URL.replace("://root@", f"://root:{PASSWORD}@")
    assert PASSWORD in url
    status = salesplan("status", url=url, cwd=tmp_path)
    assert status.returncode == 0 and "database postgresql+psycopg2://root:***@" in status.stderr
    assert PASSWORD not in status.stdout + status.stderr
    assert json.loads(salesplan("status", "--json", url=url, cwd=tmp_path).stdout)["database"] == mask_url(url)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESPLAN_")} | {"SALESPLAN_DATABASE_URL": url}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-c", "from api.cli import main; main()", "serve", "--port",
                                   str(_free_port())], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "Application startup complete" not in log.read_text() and time.monotonic() < deadline:
                assert server.poll() is None, log.read_text()
                time.sleep(0.2)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    text = log.read_text()
    assert "salesplan on postgresql+psycopg2://root:***@127.0.0.1" in text and "Application startup complete" in text
    assert PASSWORD not in text


def test_readyz_names_a_database_failure_without_its_password(tmp_path: Path, monkeypatch: Any) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", inline_projections=False))
    with TestClient(app) as client:
        engine = app.state.services.database.engine

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise sa.exc.OperationalError("connect", {}, Exception(f"could not connect: postgresql://u:{PASSWORD}@db/x"))

        monkeypatch.setattr(engine, "connect", refuse)
        answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"
    assert PASSWORD not in answer.text and "postgresql://u:***@db/x" in answer.text

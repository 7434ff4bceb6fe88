"""`salesplan bench`: salesplan measured side by side with the machine's ceilings for the same work.

Every figure is a median over repeated runs, with min and max, and is stated as a ratio to
its ceiling measured in the same run (the machine is shared: absolute rates drift, ratios
much less). The goals are checked here — never in a timed test — and a missed goal is
reported as missed. Results go to the console and to ``bench-results.json``.

The benchmark is a list of sections, each a function from the shared ``Bench`` context to
figures; ``--only`` runs some of them. ``import`` builds the history the others read (it
resets the bench database's schema); ``--reuse`` keeps a history already there instead.

Load comes from separate processes (the GIL would otherwise measure the client), on
loopback, bounded in count and time: ``wrk`` when it is installed (one thread, event-driven,
so that it takes as little of the server's cores as it can), else Python clients.
"""

from __future__ import annotations

import bisect
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

EVENT_STATE = json.dumps({
    "timestamp": {"_type_": "datetime_iso", "_data_": "2026-03-01T10:00:00+00:00"},
    "actor": "7f9c1e9a-5b8d-4c62-9d3e-2f1a0b6c4d5e",
    "effective_at": {"_type_": "datetime_iso", "_data_": "2026-03-01T09:30:00+00:00"},
    "kind": "call", "member_id": {"_type_": "uuid_hex", "_data_": "7f9c1e9a5b8d4c629d3e2f1a0b6c4d5e"},
    "deal_id": None, "note": "called the buyer about the renewal",
    "originator_topic": "domain.deal:Activity",
}).encode()
TOPIC = "domain.deal:Activity.Logged"
CRM_DATA = Path(os.environ.get("SALESPLAN_CRM_DATA", "../shared/data/crm-sales-opportunities"))


# --- figures and goals --------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """What a figure must reach: a ratio to its ceiling (at least / at most), or a value below a bound."""

    kind: str  # "ratio_at_least" | "ratio_at_most" | "below"
    bound: float

    @property
    def text(self) -> str:
        if self.kind == "ratio_at_least":
            return f"≥ {self.bound:g} × ceiling"
        if self.kind == "ratio_at_most":
            return f"≤ {self.bound:g} × ceiling"
        return f"< {self.bound:g}"

    def met(self, figure: Figure) -> bool:
        if self.kind == "below":
            return figure.median < self.bound
        ratio = figure.ratio
        if ratio is None:
            return False
        return ratio >= self.bound if self.kind == "ratio_at_least" else ratio <= self.bound


def at_least(ratio: float) -> Goal:
    return Goal("ratio_at_least", ratio)


def at_most(ratio: float) -> Goal:
    return Goal("ratio_at_most", ratio)


def below(value: float) -> Goal:
    return Goal("below", value)


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    runs: list[float]
    ceiling: str | None = None
    ceiling_runs: list[float] = field(default_factory=list)
    goal: Goal | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def ceiling_median(self) -> float | None:
        return statistics.median(self.ceiling_runs) if self.ceiling_runs else None

    @property
    def ratio(self) -> float | None:
        c = self.ceiling_median
        return None if not c else self.median / c

    @property
    def goal_met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "goal": self.goal.text if self.goal else None, "median": self.median,
                "ceiling_median": self.ceiling_median, "ratio": self.ratio, "goal_met": self.goal_met}


# --- helpers ------------------------------------------------------------------------------


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


def ensure_database(url: str) -> None:
    """Create the bench database if it does not exist yet (through the server's maintenance database)."""
    database = sa.engine.make_url(url).database
    probe = sa.create_engine(url)
    try:
        with probe.connect():
            return
    except sa.exc.OperationalError:
        pass
    finally:
        probe.dispose()
    admin = sa.create_engine(sa.engine.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    admin.dispose()


def reset_schema(url: str) -> None:
    """Empty the bench database (its public schema), as the test fixture does."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _repeat(runs: int, work: Callable[[], float]) -> list[float]:
    return [work() for _ in range(runs)]


# --- ceilings: raw PostgreSQL -------------------------------------------------------------


def _raw_insert_worker(dsn: str, locked: bool, seconds: float, out: Any) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if locked:
            cur.execute("LOCK TABLE bench_raw IN EXCLUSIVE MODE")
        cur.execute("INSERT INTO bench_raw (originator_id, originator_version, topic, state) VALUES (%s, 1, %s, %s)",
                    (str(uuid.uuid4()), TOPIC, EVENT_STATE))
        if locked:
            cur.execute("NOTIFY bench_raw")
        conn.commit()
        done += 1
    out.put(done)
    conn.close()


def raw_insert_rate(dsn: str, clients: int, locked: bool, seconds: float) -> float:
    """Event-sized rows inserted and committed one per transaction, per second, by ``clients`` processes."""
    queue: Any = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_raw_insert_worker, args=(dsn, locked, seconds, queue))
             for _ in range(clients)]
    for p in procs:
        p.start()
    total: int = sum(queue.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def prepare_raw(dsn: str) -> None:
    """The ceilings' tables; ``bench_raw`` has the event store's keys (id, and unique aggregate + version)."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS bench_raw; DROP TABLE IF EXISTS bench_rows")
    cur.execute("CREATE TABLE bench_raw (id bigserial PRIMARY KEY, originator_id uuid NOT NULL, "
                "originator_version int NOT NULL, topic text NOT NULL, state bytea NOT NULL)")
    cur.execute("CREATE UNIQUE INDEX bench_raw_aggregate ON bench_raw (originator_id, originator_version)")
    cur.execute("CREATE TABLE bench_rows (position bigint PRIMARY KEY, kind text, effective_at timestamptz, "
                "payload text)")
    conn.commit()
    conn.close()


def raw_batched_insert_rate(dsn: str, rows: list[tuple[str, int, str, bytes]], batch: int = 500) -> float:
    """The same event rows written with multi-row INSERTs, ``batch`` per transaction."""
    import psycopg2
    from psycopg2.extras import execute_values

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("TRUNCATE bench_raw")
    conn.commit()
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        execute_values(cur, "INSERT INTO bench_raw (originator_id, originator_version, topic, state) VALUES %s",
                       rows[i:i + batch], page_size=batch)
        conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def raw_scan_and_write_rate(dsn: str, batch: int = 500) -> float:
    """Ordered scan of the event store with JSON decoding, plus a batched write of one row per event."""
    import psycopg2
    from psycopg2.extras import execute_values

    conn = psycopg2.connect(dsn)
    writer = psycopg2.connect(dsn)
    wcur = writer.cursor()
    wcur.execute("TRUNCATE bench_rows")
    writer.commit()
    started = time.perf_counter()
    cur = conn.cursor(name="scan")
    cur.itersize = 5000
    cur.execute("SELECT id, topic, state FROM salesplan_events ORDER BY id")
    pending: list[tuple[int, str, str, str]] = []
    count = 0
    for position, topic, state in cur:
        data = json.loads(bytes(state))
        effective = data.get("effective_at", {}).get("_data_", "2026-01-01T00:00:00+00:00")
        pending.append((position, topic, effective, str(len(data))))
        count += 1
        if len(pending) >= batch:
            execute_values(wcur, "INSERT INTO bench_rows VALUES %s", pending, page_size=batch)
            writer.commit()
            pending = []
    if pending:
        execute_values(wcur, "INSERT INTO bench_rows VALUES %s", pending, page_size=batch)
        writer.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    writer.close()
    return count / elapsed


def raw_pk_select_latencies(dsn: str, seconds: float) -> list[float]:
    import psycopg2

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT max(id) FROM salesplan_events")
    top = cur.fetchone()[0] or 1  # type: ignore[index]
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        key = random.randint(1, top)
        t0 = time.perf_counter()
        cur.execute("SELECT id, topic, state FROM salesplan_events WHERE id = %s", (key,))
        cur.fetchone()
        latencies.append(time.perf_counter() - t0)
    conn.close()
    return latencies


def _stored_rows(dsn: str, after: int, limit: int) -> list[tuple[str, int, str, bytes]]:
    """The event store's rows after a position, as a raw INSERT would write them."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT originator_id::text, originator_version, topic, state FROM salesplan_events WHERE id > %s "
                "ORDER BY id LIMIT %s", (after, limit))
    rows = [(r[0], r[1], r[2], bytes(r[3])) for r in cur.fetchall()]
    conn.close()
    return rows


# --- the service over HTTP ----------------------------------------------------------------


class Service:
    """`salesplan serve` and `salesplan project` as separate processes on one database, as in production."""

    def __init__(self, database_url: str, port: int, workdir: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SALESPLAN_DATABASE_URL": database_url, "SALESPLAN_INLINE_PROJECTIONS": "false",
               "SALESPLAN_PORT": str(port)}
        exe = [sys.executable, "-c", "from api.cli import main; main()"]
        self.logs = [open(workdir / "serve.log", "wb"), open(workdir / "project.log", "wb")]  # noqa: SIM115
        self.server = subprocess.Popen([*exe, "serve", "--port", str(port)], env=env, stdout=self.logs[0],
                                       stderr=subprocess.STDOUT)
        self.projector = subprocess.Popen([*exe, "project"], env=env, stdout=self.logs[1], stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the service did not start; see {workdir}/serve.log")

    def stop(self) -> None:
        for proc in (self.server, self.projector):
            proc.send_signal(signal.SIGTERM)
        for proc in (self.server, self.projector):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()


@dataclass(frozen=True)
class Request:
    """What a load generator sends: a GET of ``path``, or POSTs of one of ``bodies`` (each with a fresh
    Idempotency-Key)."""

    path: str
    bodies: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        return "POST" if self.bodies else "GET"


@dataclass(frozen=True)
class Load:
    """What a load run measured: answered requests per second, latencies, failures, and by which generator."""

    generator: str
    rate: float
    p50: float  # seconds
    p99: float
    errors: int


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_WRK_SCRIPT = """
local token = "%(token)s"
local bodies = {%(bodies)s}
local method = "%(method)s"
local path = "%(path)s"
local run = "%(run)s"
local counter = 0
local thread_id = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function request()
  counter = counter + 1
  local headers = {["Authorization"] = "Bearer " .. token}
  if #bodies == 0 then
    return wrk.format(method, path, headers)
  end
  headers["Content-Type"] = "application/json"
  headers["Idempotency-Key"] = "bench-" .. run .. "-" .. thread_id .. "-" .. counter
  return wrk.format(method, path, headers, bodies[(counter %% #bodies) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SALESPLAN-WRK %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _wrk_load(url: str, token: str, request: Request, clients: int, seconds: float, workdir: Path) -> Load:
    script = workdir / f"load-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(_WRK_SCRIPT % {
        "token": token, "method": request.method, "path": request.path, "run": uuid.uuid4().hex[:12],
        "bodies": ", ".join(json.dumps(b) for b in request.bodies),
    })
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("SALESPLAN-WRK "))
    requests, duration_us, errors, p50_us, p99_us = (int(x) for x in line.split()[1:])
    answered = requests - errors
    return Load("wrk", answered / (duration_us / 1e6), p50_us / 1e6, p99_us / 1e6, errors)


def _python_worker(url: str, token: str, request: Request, seconds: float, out: Any, worker: int) -> None:
    import httpx

    latencies: list[float] = []
    errors = 0
    run = uuid.uuid4().hex[:12]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            t0 = time.perf_counter()
            if request.bodies:
                r = client.post(request.path, content=request.bodies[n % len(request.bodies)],
                                headers={"Content-Type": "application/json",
                                         "Idempotency-Key": f"bench-{run}-{worker}-{n}"})
            else:
                r = client.get(request.path)
            t1 = time.perf_counter()
            if r.status_code >= 300:
                errors += 1
                continue
            latencies.append(t1 - t0)
    out.put((latencies, errors))


def _python_load(url: str, token: str, request: Request, clients: int, seconds: float) -> Load:
    ctx = mp.get_context("spawn")
    queue: Any = ctx.Queue()
    procs = [ctx.Process(target=_python_worker, args=(url, token, request, seconds, queue, i)) for i in range(clients)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    latencies = [x for r in results for x in r[0]]
    return Load("python", len(latencies) / seconds, _percentile(latencies, 50), _percentile(latencies, 99),
                sum(r[1] for r in results))


def http_load(url: str, token: str, request: Request, clients: int, seconds: float, workdir: Path) -> Load:
    """``clients`` concurrent connections sending ``request`` for ``seconds``: wrk if installed, else Python."""
    if wrk_available():
        return _wrk_load(url, token, request, clients, seconds, workdir)
    return _python_load(url, token, request, clients, seconds)


class LagWatcher:
    """How long appended events wait until every projection has applied them.

    Polls the log's head and the lowest projection position together: a head first seen at
    t is projected at the first poll whose lowest position reaches it; each new position
    counts once (positions that arrived between two polls share their sample).
    """

    def __init__(self, database_url: str, poll_seconds: float = 0.002) -> None:
        self.engine = sa.create_engine(database_url)
        self.poll_seconds = poll_seconds
        self.heads: list[tuple[int, float]] = []  # (head, first seen)
        self.projected: list[tuple[int, float]] = []  # (lowest position, first seen)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        query = sa.text("SELECT (SELECT max(id) FROM salesplan_events), "
                        "(SELECT min(position) FROM salesplan_projections WHERE status <> 'rebuilding')")
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                head, lowest = conn.execute(query).one()
                conn.commit()
                now = time.perf_counter()
                if not self.heads or head > self.heads[-1][0]:
                    self.heads.append((int(head), now))
                if not self.projected or lowest > self.projected[-1][0]:
                    self.projected.append((int(lowest), now))
                time.sleep(self.poll_seconds)

    def lags(self, settle_seconds: float = 5.0) -> list[float]:
        """Stop (after giving the projections ``settle_seconds`` to catch up) and return one lag per position."""
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline and self.heads and (not self.projected
                                                              or self.projected[-1][0] < self.heads[-1][0]):
            time.sleep(0.01)
        self.stop.set()
        self.thread.join()
        self.engine.dispose()
        positions = [p for p, _ in self.projected]
        result: list[float] = []
        previous = self.heads[0][0] if self.heads else 0
        for head, seen in self.heads[1:]:
            i = bisect.bisect_left(positions, head)
            if i < len(positions):
                result.extend([max(self.projected[i][1] - seen, 0.0)] * (head - previous))
            previous = head
        return result


# --- the benchmark ------------------------------------------------------------------------


@dataclass
class BenchConfig:
    database_url: str = "postgresql+psycopg2://root@127.0.0.1:5432/salesplan_bench"
    events: int = 1_000_000
    runs: int = 3
    seconds: float = 4.0
    sqlite_events: int = 200_000  # the embedded default is for one team, not for a million events
    port: int = 8765
    output: Path = Path("bench-results.json")
    only: tuple[str, ...] = ()  # sections to run (default: all)
    reuse: bool = False  # keep a history already in the bench database instead of importing it again


@dataclass
class Bench:
    """What the sections share: the configuration, the PostgreSQL application and a service started on demand."""

    config: BenchConfig
    say: Callable[[str], None]
    workdir: Path
    app: Any = None
    engine: Any = None
    token: str = ""
    _service: Service | None = None

    @property
    def url(self) -> str:
        return self.config.database_url

    @property
    def dsn(self) -> str:
        return _psycopg_dsn(self.url)

    def open(self) -> None:
        from domain.application import SalesPlanning
        from domain.persistence import open_database
        from projections.engine import ProjectionEngine
        from projections.registry import all_projections

        self.app = SalesPlanning(open_database(self.url))
        self.engine = ProjectionEngine(self.app, all_projections())
        self.engine.setup()

    def service(self) -> Service:
        if self._service is None:
            from api.tokens import create_token

            self.engine.catch_up()  # the service starts with every projection at the head
            _token_id, self.token = create_token(self.app.database, role="admin", label="bench")
            self._service = Service(self.url, self.config.port, self.workdir)
        return self._service

    def close(self) -> None:
        from domain.persistence import close_database

        if self._service is not None:
            self._service.stop()
            self._service = None
        close_database(self.url)

    def load(self, request: Request, clients: int) -> Load:
        return http_load(self.service().url, self.token, request, clients, self.config.seconds, self.workdir)


def _rebuild_every(engine: Any) -> None:
    """Rebuild every projection, as `salesplan rebuild` does (in parallel processes, one per core)."""
    from projections.registry import rebuild

    rebuild(engine.database.url, list(engine.projections))


def _history_present(bench: Bench) -> bool:
    return bool(bench.engine.head() >= bench.config.events)


def section_import(bench: Bench) -> list[Figure]:
    """Bulk import into an emptied store: CRM exports, then the generated history the other sections read."""
    from api.generator import generate
    from api.importer import import_crm

    config = bench.config
    if config.reuse and _history_present(bench):
        bench.say(f"reusing the history of {bench.engine.head():,} events already in the bench database")
        return []
    bench.close()
    reset_schema(bench.url)
    prepare_raw(bench.dsn)
    bench.open()
    figures = []
    if (CRM_DATA / "sales_pipeline.csv").is_file():
        bench.say("importing the CRM export…")
        crm_runs, crm_raw = [], []
        for run in range(config.runs):
            before = bench.engine.head()
            started = time.perf_counter()
            crm = import_crm(bench.app, CRM_DATA, company=f"Bench CRM {run + 1}")
            crm_runs.append(crm.events / (time.perf_counter() - started))
            crm_raw.append(raw_batched_insert_rate(bench.dsn, _stored_rows(bench.dsn, before, crm.events)))
        figures.append(Figure("import", "bulk import (import-crm → event store)", "events/s", crm_runs,
                              "raw batched INSERT of the same rows", crm_raw, at_least(0.5),
                              note=f"{crm.events:,} events per import"))
    else:
        bench.say(f"no CRM export at {CRM_DATA} (set SALESPLAN_CRM_DATA): its import is not measured")
    bench.say(f"generating {config.events:,} events (bulk import path)…")
    before = bench.engine.head()
    started = time.perf_counter()
    report = generate(bench.app, events=config.events, seed=1)
    rate = report.events / (time.perf_counter() - started)
    rows = _stored_rows(bench.dsn, before, min(report.events, 200_000))
    figures.append(Figure("import", "bulk import (generator → event store)", "events/s", [rate],
                          "raw batched INSERT of the same rows", _repeat(config.runs,
                                                                         lambda: raw_batched_insert_rate(bench.dsn, rows)),
                          at_least(0.5), note=f"{report.events:,} events"))
    return figures


def section_rebuild(bench: Bench) -> list[Figure]:
    """Every projection rebuilt over the whole history, together and one by one, vs scan + decode + write."""
    config = bench.config
    engine = bench.engine
    head: int = engine.head()
    prepare_raw(bench.dsn)
    bench.say(f"rebuilding every projection over {head:,} events…")
    every, ceiling = [], []
    for _ in range(config.runs):
        t0 = time.perf_counter()
        _rebuild_every(engine)
        every.append(head / (time.perf_counter() - t0))
        ceiling.append(raw_scan_and_write_rate(bench.dsn))
    seconds = [head / r for r in every]
    figures = [
        Figure("rebuild", "rebuild of every projection (`salesplan rebuild`)", "events/s", every,
               "ordered scan + JSON decode + batched write", ceiling, at_least(0.4),
               note=f"{head:,} events"),
        Figure("rebuild", f"  wall time of that rebuild ({head:,} events)", "s", seconds, goal=below(60),
               note="stretch: 30 s"),
    ]
    for name in engine.projections:
        bench.say(f"rebuilding {name} alone…")

        def one(name: str = name) -> float:
            t0 = time.perf_counter()
            engine.rebuild(name)
            return head / (time.perf_counter() - t0)

        figures.append(Figure("rebuild", f"  rebuild of {name} alone", "events/s", _repeat(config.runs, one),
                              "ordered scan + JSON decode + batched write", ceiling, at_least(0.4)))
    return figures


def _append_requests(bench: Bench, reps: int = 8) -> Request:
    """POST /activities for one of ``reps`` members of a bench team (each request a fresh Idempotency-Key)."""
    app = bench.app
    unit = app.add_unit(name="Bench team", actor="bench").id
    members = [app.add_member(name=f"Bench Rep {i + 1}", role="rep", unit_id=unit, actor="bench").id
               for i in range(reps)]
    bodies = tuple(json.dumps({"kind": "call", "member_id": str(m), "note": "called the buyer about the renewal"})
                   for m in members)
    return Request("/activities", bodies)


def section_writes(bench: Bench) -> list[Figure]:
    """Commands over HTTP at concurrency 1 and 8 vs raw inserts; the projections' lag under that load."""
    config = bench.config
    prepare_raw(bench.dsn)
    appends = _append_requests(bench)
    service = bench.service()
    figures = []
    generator = ""
    for clients in (1, 8):
        bench.say(f"appends over HTTP, {clients} client(s)…")
        rates, p50, p99, raw_runs, locked_runs, lags = [], [], [], [], [], []
        for _ in range(config.runs):
            watcher = LagWatcher(bench.url)
            load = http_load(service.url, bench.token, appends, clients, config.seconds, bench.workdir)
            lags.extend(watcher.lags())
            generator = load.generator
            if load.errors:
                bench.say(f"  {load.errors} failed appends")
            rates.append(load.rate)
            p50.append(load.p50 * 1000)
            p99.append(load.p99 * 1000)
            raw_runs.append(raw_insert_rate(bench.dsn, clients, False, config.seconds))
            locked_runs.append(raw_insert_rate(bench.dsn, clients, True, config.seconds))
        figures += [
            Figure("writes", f"HTTP append, concurrency {clients}", "commands/s", rates,
                   "INSERT+commit under LOCK TABLE + NOTIFY", locked_runs, at_least(0.5 if clients == 8 else 0.3),
                   note=f"load: {generator}"),
            Figure("writes", f"  HTTP append latency p50, concurrency {clients}", "ms", p50),
            Figure("writes", f"  HTTP append latency p99, concurrency {clients}", "ms", p99),
            Figure("writes", f"  ceiling: raw INSERT+commit, concurrency {clients}", "rows/s", raw_runs),
            Figure("writes", f"  ceiling: INSERT under table lock + NOTIFY, concurrency {clients}", "rows/s",
                   locked_runs),
            Figure("writes", f"live projection lag p50, concurrency {clients}", "ms", [_percentile(lags, 50) * 1000],
                   note="until every projection has applied the event"),
            Figure("writes", f"live projection lag p99, concurrency {clients}", "ms", [_percentile(lags, 99) * 1000],
                   goal=below(100)),
        ]
    return figures


def section_reads(bench: Bench) -> list[Figure]:
    """One progress row over HTTP vs a trivial endpoint and a primary-key SELECT."""
    from domain.values import Scope

    config = bench.config
    app = bench.app
    unit = app.add_unit(name="Bench reads", actor="bench").id
    plan = app.draft_plan(name="Bench plan", span="2026", currency="EUR", unit_id=unit, actor="bench").id
    app.set_target(plan, metric="activities", period="2026", scope=Scope(unit_id=unit), committed="100000",
                   actor="bench")
    bench.engine.catch_up()
    bench.service()
    bench.say("reads over HTTP…")
    progress_row = Request(f"/progress?plan_id={plan}&metric=activities")
    read_p50, read_p99, read_rps, trivial_p50, pk_p50 = [], [], [], [], []
    for _ in range(config.runs):
        load = bench.load(progress_row, 1)
        read_rps.append(load.rate)
        read_p50.append(load.p50 * 1000)
        read_p99.append(load.p99 * 1000)
        trivial_p50.append(bench.load(Request("/healthz"), 1).p50 * 1000)
        pk_p50.append(_percentile(raw_pk_select_latencies(bench.dsn, config.seconds), 50) * 1000)
    ceiling = [t + p for t, p in zip(trivial_p50, pk_p50, strict=True)]
    return [
        Figure("reads", "progress row over HTTP p50", "ms", read_p50, "trivial endpoint p50 + PK select p50", ceiling,
               at_most(2)),
        Figure("reads", "progress row over HTTP p99", "ms", read_p99),
        Figure("reads", "progress row over HTTP", "req/s", read_rps),
        Figure("reads", "  trivial JSON endpoint p50", "ms", trivial_p50),
        Figure("reads", "  raw primary-key SELECT p50", "ms", pk_p50),
    ]


def section_as_of(bench: Bench) -> list[Figure]:
    """An as-of query over the long history vs the current-state query (progress alone is read)."""
    bench.engine.catch_up(["progress"])
    return [as_of_figure("as_of", bench.app.database, bench.engine.head(), bench.config.runs, "as-of progress query")]


def section_sqlite(bench: Bench) -> list[Figure]:
    """The embedded default: bulk import, rebuild and as-of queries on one SQLite file, against raw sqlite3."""
    import sqlite3

    from api.generator import generate
    from api.importer import import_crm
    from domain.application import SalesPlanning
    from domain.persistence import close_database, open_database
    from projections.engine import ProjectionEngine
    from projections.registry import all_projections

    config = bench.config
    events = min(config.events, config.sqlite_events)
    path = bench.workdir / "bench.db"
    url = f"sqlite:///{path}"
    app = SalesPlanning(open_database(url))
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE bench_raw (id INTEGER PRIMARY KEY, originator_id, originator_version, topic, state)")
    raw.execute("CREATE UNIQUE INDEX bench_raw_aggregate ON bench_raw (originator_id, originator_version)")
    raw.execute("CREATE TABLE bench_rows (position INTEGER PRIMARY KEY, kind TEXT, effective_at TEXT, payload TEXT)")
    raw.commit()

    def stored_rows(after: int, limit: int) -> list[Any]:
        return raw.execute("SELECT originator_id, originator_version, topic, state FROM salesplan_events "
                           "WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()

    def batched_insert(rows: list[Any]) -> float:
        raw.execute("DELETE FROM bench_raw")
        raw.commit()
        t0 = time.perf_counter()
        for i in range(0, len(rows), 500):
            raw.executemany("INSERT INTO bench_raw (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
                            rows[i:i + 500])
            raw.commit()
        return len(rows) / (time.perf_counter() - t0)

    def scan_and_write() -> float:
        raw.execute("DELETE FROM bench_rows")
        raw.commit()
        t0 = time.perf_counter()
        pending: list[tuple[int, str, str, str]] = []
        count = 0
        for position, topic, state in raw.execute("SELECT id, topic, state FROM salesplan_events ORDER BY id"):
            data = json.loads(state)
            pending.append((position, topic, str(data.get("effective_at")), str(len(data))))
            count += 1
            if len(pending) >= 500:
                raw.executemany("INSERT INTO bench_rows VALUES (?, ?, ?, ?)", pending)
                raw.commit()
                pending = []
        raw.executemany("INSERT INTO bench_rows VALUES (?, ?, ?, ?)", pending)
        raw.commit()
        return count / (time.perf_counter() - t0)

    figures = []
    if (CRM_DATA / "sales_pipeline.csv").is_file():
        bench.say("SQLite: importing the CRM export…")
        crm_runs, crm_raw = [], []
        for run in range(config.runs):
            before = engine.head()
            started = time.perf_counter()
            crm = import_crm(app, CRM_DATA, company=f"Bench CRM {run + 1}")
            crm_runs.append(crm.events / (time.perf_counter() - started))
            crm_raw.append(batched_insert(stored_rows(before, crm.events)))
        figures.append(Figure("sqlite", "SQLite: bulk import (import-crm → event store)", "events/s", crm_runs,
                              "raw sqlite3 batched INSERT of the same rows", crm_raw, at_least(0.5),
                              note=f"{crm.events:,} events per import"))
    bench.say(f"SQLite: generating {events:,} events…")
    before = engine.head()
    started = time.perf_counter()
    report = generate(app, events=events, seed=2)
    import_rate = report.events / (time.perf_counter() - started)
    rows = stored_rows(before, report.events)
    figures.append(Figure("sqlite", "SQLite: bulk import (generator → event store)", "events/s", [import_rate],
                          "raw sqlite3 batched INSERT of the same rows", _repeat(config.runs, lambda: batched_insert(rows)),
                          at_least(0.5), note=f"{report.events:,} events"))
    head: int = engine.head()
    bench.say(f"SQLite: rebuilding every projection over {head:,} events…")
    every, ceiling = [], []
    for _ in range(config.runs):
        t0 = time.perf_counter()
        _rebuild_every(engine)
        every.append(head / (time.perf_counter() - t0))
        ceiling.append(scan_and_write())
    figures.append(Figure("sqlite", "SQLite: rebuild of every projection", "events/s", every,
                          "raw ordered scan + JSON decode + batched write", ceiling, at_least(0.4),
                          note=f"{head:,} events"))
    for name in engine.projections:
        bench.say(f"SQLite: rebuilding {name} alone…")

        def one(name: str = name) -> float:
            t0 = time.perf_counter()
            engine.rebuild(name)
            return head / (time.perf_counter() - t0)

        figures.append(Figure("sqlite", f"  SQLite: rebuild of {name} alone", "events/s", _repeat(config.runs, one),
                              "raw ordered scan + JSON decode + batched write", ceiling, at_least(0.4)))
    raw.close()
    figures.append(as_of_figure("sqlite", app.database, head, config.runs, "SQLite: as-of progress query"))
    close_database(url)
    return figures


def as_of_figure(section: str, database: Any, head: int, runs: int, label: str) -> Figure:
    """A plan as known halfway through the log (45 days after it was drafted) vs the same plan now."""
    from projections.folds.progress import LIVE as PROGRESS
    from projections.history import Cut
    from projections.queries.progress import ProgressFilter, progress

    with database.engine.connect() as conn:
        # A plan that already existed at the earlier cut: both queries answer about the same targets.
        plans = PROGRESS.plans.c
        plan_row = conn.execute(sa.select(plans.plan_id, plans.effective_at).where(plans.position <= head // 2)
                                .order_by(plans.position.desc()).limit(1)).first()
        filters = ProgressFilter(plan_id=plan_row.plan_id) if plan_row else ProgressFilter()
        now = datetime.now(UTC)
        as_of_time = plan_row.effective_at + timedelta(days=45) if plan_row else now - timedelta(days=200)

        def timed(cut: Cut) -> float:
            samples = []
            for _ in range(15):
                t0 = time.perf_counter()
                progress(conn, cut=cut, now=now, filters=filters)
                samples.append(time.perf_counter() - t0)
            return statistics.median(samples) * 1000

        current = _repeat(runs, lambda: timed(Cut(head)))
        as_of = _repeat(runs, lambda: timed(Cut(head // 2, as_of_time)))
    return Figure(section, f"{label} (a plan as known halfway through the log)", "ms", as_of,
                  "the current-state query", current, at_most(2))


# --- the read side: every question measured through one core ------------------------------------


@dataclass(frozen=True)
class _Subject:
    """What the read figures ask about: the largest plan of the first year (the one with a whole year of facts),
    its second quarter and one of its reps."""

    plan: str
    span: str
    quarter: str
    year_target: str
    member: str
    middle: str  # an instant inside the quarter, RFC 3339
    drafted: int  # the position the plan was drafted at


def _largest_plan(database: Any) -> _Subject:
    from projections.folds.progress import LIVE as LEDGER

    t, p = LEDGER.targets.c, LEDGER.plans.c
    with database.engine.connect() as conn:
        plan_id, span = conn.execute(
            sa.select(t.plan_id, p.span).join(LEDGER.plans, sa.and_(p.plan_id == t.plan_id, p.next_position.is_(None)))
            .where(t.next_position.is_(None), t.removed.is_(False)).group_by(t.plan_id, p.span)
            .order_by(p.span, sa.func.count().desc()).limit(1)).one()
        drafted = conn.execute(sa.select(sa.func.min(p.position)).where(p.plan_id == plan_id)).scalar_one()
        quarter = f"{span}-Q2"
        year = conn.execute(sa.select(t.target_id).where(
            t.plan_id == plan_id, t.metric == "revenue", t.period == span, t.next_position.is_(None),
            t.unit_id.is_not(None))).scalars().first()
        member = conn.execute(sa.select(t.member_id).where(
            t.plan_id == plan_id, t.metric == "revenue", t.period == quarter, t.next_position.is_(None),
            t.member_id.is_not(None)).order_by(t.member_id).limit(1)).scalar_one()
    return _Subject(str(plan_id), span, quarter, str(year), str(member), f"{span}-05-15T12:00:00Z", int(drafted))


def _reading(bench: Bench, path: str) -> list[float]:
    """p50 latency (ms) of one client reading ``path`` over HTTP, once per run."""
    return [bench.load(Request(path), 1).p50 * 1000 for _ in range(bench.config.runs)]


def section_measure(bench: Bench) -> list[Figure]:
    """The questions of the read side over HTTP on the whole history: progress, cuts, burn-up, replay, funnel,
    attribution and alerts, each against its goal; and a rep's read on a tenth of the history beside it."""
    bench.engine.catch_up()
    bench.service()
    s = _largest_plan(bench.app.database)
    head = bench.engine.head()
    bench.say(f"read-side questions on plan {s.plan} ({s.span}) at position {head:,}…")
    trivial = _reading(bench, "/healthz")
    pk = [_percentile(raw_pk_select_latencies(bench.dsn, bench.config.seconds), 50) * 1000
          for _ in range(bench.config.runs)]
    floor = [a + b for a, b in zip(trivial, pk, strict=True)]
    plan_wide = _reading(bench, f"/progress?plan_id={s.plan}")
    single = _reading(bench, f"/progress?member_id={s.member}&period={s.quarter}&metric=revenue")
    as_of = _reading(bench, f"/progress?plan_id={s.plan}&as_of={s.middle}")
    # As known halfway between the plan's drafting and now: the same plan, with the facts recorded by then.
    known = _reading(bench, f"/progress?plan_id={s.plan}&as_of={s.middle}&known_at_position={(s.drafted + head) // 2}")
    q_start, q_end = f"{s.span}-04-01T00:00:00Z", f"{s.span}-07-01T00:00:00Z"
    figures = [
        Figure("measure", "plan-wide /progress p50", "ms", plan_wide, goal=below(100), note="every target of the plan"),
        Figure("measure", "  plan-wide ÷ one target", "ms", plan_wide, "one target's /progress", single, at_most(10)),
        Figure("measure", "one target's /progress p50", "ms", single, "trivial endpoint + PK select", floor,
               at_most(2)),
        Figure("measure", "plan-wide /progress as of mid-quarter", "ms", as_of, "the current read", plan_wide,
               at_most(1.5)),
        Figure("measure", "  … and as known halfway through its life", "ms", known, "the current read", plan_wide,
               at_most(1.5)),
        Figure("measure", "a year target's daily burn-up p50", "ms", _reading(bench, f"/targets/{s.year_target}/burnup"),
               goal=below(500)),
        Figure("measure", "a quarter's daily replay p50", "ms",
               _reading(bench, f"/plans/{s.plan}/replay?span={s.quarter}&step=day"), goal=below(300)),
        Figure("measure", "the company funnel for a quarter p50", "ms",
               _reading(bench, f"/analytics/funnel?span_start={q_start}&span_end={q_end}"), goal=below(300)),
        Figure("measure", "attribution between two dates p50", "ms",
               _reading(bench, f"/plans/{s.plan}/attribution?from={s.span}-05-01&to={s.span}-06-01&known=now"),
               goal=below(500)),
        Figure("measure", "alert evaluation for the company p50", "ms",
               _reading(bench, f"/alerts/preview?as_of={s.middle}"), goal=below(1000)),
    ]
    figures.append(_flat(bench, single))
    return figures


def _flat(bench: Bench, single_now: list[float]) -> Figure:
    """The same rep's read on a history a tenth as long (its own database): a read costs what it reads."""
    from api.generator import generate
    from domain.application import SalesPlanning
    from domain.persistence import close_database, open_database
    from projections.engine import ProjectionEngine
    from projections.registry import all_projections

    small_url = bench.url.rsplit("/", 1)[0] + "/" + bench.url.rsplit("/", 1)[1] + "_tenth"
    ensure_database(small_url)
    app = SalesPlanning(open_database(small_url))
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    events = max(bench.config.events // 10, 10_000)
    if engine.head() < events:
        bench.close()
        reset_schema(small_url)
        app = SalesPlanning(open_database(small_url))
        engine = ProjectionEngine(app, all_projections())
        engine.setup()
        bench.say(f"generating {events:,} events for the read on a tenth of the history…")
        generate(app, events=events, seed=1)
        bench.open()
    engine.catch_up()
    s = _largest_plan(app.database)
    (bench.workdir / "tenth").mkdir(exist_ok=True)
    service = Service(small_url, bench.config.port + 1, bench.workdir / "tenth")
    from api.tokens import create_token

    _token_id, token = create_token(app.database, role="admin", label="bench")
    try:
        path = f"/progress?member_id={s.member}&period={s.quarter}&metric=revenue"
        small = [http_load(service.url, token, Request(path), 1, bench.config.seconds, bench.workdir).p50 * 1000
                 for _ in range(bench.config.runs)]
    finally:
        service.stop()
        close_database(small_url)
    return Figure("measure", "one target's /progress on the whole history", "ms", single_now,
                  f"the same read on {events:,} events", small, at_most(1.5))


SECTIONS: dict[str, Callable[[Bench], list[Figure]]] = {
    "import": section_import,
    "rebuild": section_rebuild,
    "writes": section_writes,
    "reads": section_reads,
    "as_of": section_as_of,
    "measure": section_measure,
    "sqlite": section_sqlite,
}
"""The sections in the order they run: ``import`` writes the history that ``rebuild`` and ``as_of`` read."""


@contextmanager
def _bench(config: BenchConfig, say: Callable[[str], None]) -> Iterator[Bench]:
    ensure_database(config.database_url)
    bench = Bench(config, say, Path(tempfile.mkdtemp(prefix="salesplan-bench-")))
    bench.open()
    try:
        yield bench
    finally:
        bench.close()


def run_bench(config: BenchConfig, say: Callable[[str], None]) -> list[Figure]:
    """Run the chosen sections; write every figure to ``config.output``."""
    unknown = set(config.only) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    figures: list[Figure] = []
    with _bench(config, say) as bench:
        say(f"load generator: {'wrk' if wrk_available() else 'Python clients (install wrk for a lighter one)'}")
        for name, section in SECTIONS.items():
            if not config.only or name in config.only:
                figures.extend(section(bench))
                # Written after every section: a long run that fails late keeps what it measured.
                config.output.write_text(json.dumps([f.as_json() for f in figures], indent=2, default=str))
    return figures


def render(figures: list[Figure]) -> Any:
    """The results as one rich table."""
    from rich.table import Table

    table = Table("measure", "median", "min", "max", "unit", "ceiling (median)", "ratio", "goal")
    for f in figures:
        ceiling = f"{f.ceiling_median:,.2f} ({f.ceiling})" if f.ceiling_median is not None else ""
        verdict = "" if f.goal is None else f"{f.goal.text}: " + ("[green]met[/green]" if f.goal_met
                                                                  else "[red]MISSED[/red]")
        table.add_row(f.name + (f" [dim]{f.note}[/dim]" if f.note else ""), f"{f.median:,.2f}", f"{min(f.runs):,.2f}",
                      f"{max(f.runs):,.2f}", f.unit, ceiling, "" if f.ratio is None else f"{f.ratio:.2f}", verdict)
    return table

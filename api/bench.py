"""`salesplan bench`: salesplan measured side by side with the machine's ceilings for the same work.

Every figure is a median over repeated runs, with min and max, and is stated as a ratio to
its ceiling. The goals are checked here — never in a timed test — and a missed goal is
reported as missed. Results go to the console and to ``bench-results.json``.

The load generators are separate processes (the GIL would otherwise measure the client), on
loopback, bounded in count and time.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
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


@dataclass
class Figure:
    name: str
    unit: str
    runs: list[float]
    ceiling: str | None = None
    ceiling_runs: list[float] = field(default_factory=list)
    goal: str | None = None
    goal_met: bool | None = None
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


# --- helpers ------------------------------------------------------------------------------


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


def _recreate_database(admin_url: str, name: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                             "AND pid <> pg_backend_pid()"))
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
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
    import psycopg2

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS bench_raw; DROP TABLE IF EXISTS bench_rows")
    cur.execute("CREATE TABLE bench_raw (id bigserial PRIMARY KEY, originator_id uuid NOT NULL, "
                "originator_version int NOT NULL, topic text NOT NULL, state bytea NOT NULL)")
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


# --- the service over HTTP ----------------------------------------------------------------


class Service:
    """`salesplan serve` and `salesplan project` as separate processes on one database."""

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


def _http_worker(url: str, token: str, kind: str, body: dict[str, Any] | None, seconds: float, out: Any,
                 worker: int) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    appended: list[tuple[int, float]] = []
    errors = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            if kind == "append":
                n += 1
                r = client.post("/activities", json=body, headers={"Idempotency-Key": f"bench-{worker}-{uuid.uuid4()}"})
            else:
                r = client.get(kind)
            t1 = time.perf_counter()
            if r.status_code >= 300:
                errors += 1
                continue
            latencies.append(t1 - t0)
            if kind == "append":
                appended.append((int(r.json()["position"]), time.time()))
    out.put((latencies, appended, errors))


def http_load(url: str, token: str, kind: str, body: dict[str, Any] | None, clients: int,
              seconds: float) -> tuple[float, list[float], list[tuple[int, float]], int]:
    ctx = mp.get_context("spawn")
    queue: Any = ctx.Queue()
    procs = [ctx.Process(target=_http_worker, args=(url, token, kind, body, seconds, queue, i)) for i in range(clients)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    latencies = [x for r in results for x in r[0]]
    appended = [x for r in results for x in r[1]]
    errors = sum(r[2] for r in results)
    return len(latencies) / seconds, latencies, appended, errors


class LagWatcher:
    """Polls the projections' positions; lag of a command = when its position was projected − its answer."""

    def __init__(self, database_url: str, name: str = "progress") -> None:
        self.engine = sa.create_engine(database_url)
        self.name = name
        self.seen: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last = -1
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                position = conn.execute(sa.text("SELECT position FROM salesplan_projections WHERE name = :n"),
                                        {"n": self.name}).scalar_one()
                conn.commit()
                if position != last:
                    self.seen.append((int(position), time.time()))
                    last = position
                time.sleep(0.001)

    def lags(self, appended: list[tuple[int, float]]) -> list[float]:
        self.stop.set()
        self.thread.join()
        self.engine.dispose()
        import bisect

        positions = [p for p, _ in self.seen]
        result = []
        for position, answered in appended:
            i = bisect.bisect_left(positions, position)
            if i < len(self.seen):
                result.append(max(self.seen[i][1] - answered, 0.0))
        return result


# --- the benchmark ------------------------------------------------------------------------


@dataclass
class BenchConfig:
    admin_url: str = "postgresql+psycopg2://root@127.0.0.1:5432/postgres"
    database: str = "salesplan_bench"
    events: int = 1_000_000
    runs: int = 3
    seconds: float = 4.0
    sqlite_events: int = 200_000  # the embedded default is for one team, not for a million events
    port: int = 8765
    output: Path = Path("bench-results.json")


def run_bench(config: BenchConfig, say: Callable[[str], None]) -> list[Figure]:
    from api.tokens import create_token
    from domain.application import SalesPlanning
    from domain.persistence import close_database, open_database
    from projections.engine import ProjectionEngine
    from projections.registry import all_projections

    figures: list[Figure] = []
    _recreate_database(config.admin_url, config.database)
    url = config.admin_url.rsplit("/", 1)[0] + "/" + config.database
    dsn = _psycopg_dsn(url)
    prepare_raw(dsn)
    app = SalesPlanning(open_database(url))
    engine = ProjectionEngine(app, all_projections())
    engine.setup()

    # 1. Appends through the API vs raw inserts, at concurrency 1 and 8; live lag under that load.
    unit = app.add_unit(name="Bench", actor="bench").id
    member = app.add_member(name="Bench Rep", role="rep", unit_id=unit, actor="bench").id
    _token_id, token = create_token(app.database, role="admin", label="bench")
    body = {"kind": "call", "member_id": str(member), "note": "called the buyer about the renewal"}
    workdir = Path(tempfile.mkdtemp(prefix="salesplan-bench-"))
    service = Service(url, config.port, workdir)
    lags: list[float] = []
    try:
        for clients in (1, 8):
            say(f"appends over HTTP, {clients} client(s)…")
            http_runs, raw_runs, locked_runs = [], [], []
            for _ in range(config.runs):
                watcher = LagWatcher(url)
                rate, _lat, appended, errors = http_load(service.url, token, "append", body, clients, config.seconds)
                lags.extend(watcher.lags(appended))
                if errors:
                    say(f"  {errors} failed appends")
                http_runs.append(rate)
                raw_runs.append(raw_insert_rate(dsn, clients, False, config.seconds))
                locked_runs.append(raw_insert_rate(dsn, clients, True, config.seconds))
            figures.append(Figure(f"HTTP append, concurrency {clients}", "commands/s", http_runs,
                                  "INSERT+commit under LOCK TABLE + NOTIFY", locked_runs,
                                  goal="≥ 50% of the locked insert" if clients == 8 else None))
            figures.append(Figure(f"  ceiling: raw INSERT+commit, concurrency {clients}", "rows/s", raw_runs))
            figures.append(Figure(f"  ceiling: INSERT under table lock + NOTIFY, concurrency {clients}", "rows/s",
                                  locked_runs))
        figures.append(Figure("live projection lag p50", "ms", [_percentile(lags, 50) * 1000]))
        figures.append(Figure("live projection lag p99", "ms", [_percentile(lags, 99) * 1000], goal="< 100 ms"))

        # 2. Reading one progress row over HTTP vs a trivial endpoint and a primary-key SELECT.
        plan = app.draft_plan(name="Bench plan", span="2026", currency="EUR", unit_id=unit, actor="bench").id
        from domain.values import Scope

        app.set_target(plan, metric="activities", period="2026", scope=Scope(unit_id=unit), committed="100000",
                       actor="bench")
        engine.catch_up()
        say("reads over HTTP…")
        path = f"/progress?plan_id={plan}&metric=activities"
        read_p50, read_p99, read_rps, trivial_p50, pk_p50 = [], [], [], [], []
        for _ in range(config.runs):
            rps, lat, _a, _e = http_load(service.url, token, path, None, 1, config.seconds)
            read_rps.append(rps)
            read_p50.append(_percentile(lat, 50) * 1000)
            read_p99.append(_percentile(lat, 99) * 1000)
            _rps, tlat, _a, _e = http_load(service.url, token, "/healthz", None, 1, config.seconds)
            trivial_p50.append(_percentile(tlat, 50) * 1000)
            pk_p50.append(_percentile(raw_pk_select_latencies(dsn, config.seconds), 50) * 1000)
        ceiling = [t + p for t, p in zip(trivial_p50, pk_p50, strict=True)]
        figures.append(Figure("progress row over HTTP p50", "ms", read_p50, "trivial endpoint p50 + PK select p50",
                              ceiling, goal="≤ 2× the ceiling (ratio ≤ 2)"))
        figures.append(Figure("progress row over HTTP p99", "ms", read_p99))
        figures.append(Figure("progress row over HTTP", "req/s", read_rps))
        figures.append(Figure("  trivial JSON endpoint p50", "ms", trivial_p50))
        figures.append(Figure("  raw primary-key SELECT p50", "ms", pk_p50))
    finally:
        service.stop()

    # 3. Bulk import vs a raw batched insert of the same rows.
    from api.generator import generate

    say(f"generating {config.events:,} events (bulk import path)…")
    started = time.perf_counter()
    report = generate(app, events=config.events, seed=1)
    import_rate = report.events / (time.perf_counter() - started)
    rows = _stored_rows(dsn, min(report.events, 200_000))
    batched = _repeat(config.runs, lambda: raw_batched_insert_rate(dsn, rows))
    figures.append(Figure("bulk import (generator → event store)", "events/s", [import_rate],
                          "raw batched INSERT of the same rows", batched, goal="≥ 50% of the batched insert",
                          note=f"{report.events:,} events"))

    # 4. Rebuild of the progress projection over the whole history vs scan + decode + batched write.
    head = engine.head()
    say(f"rebuilding progress over {head:,} events…")

    def rebuild_rate() -> float:
        t0 = time.perf_counter()
        engine.rebuild("progress")
        return head / (time.perf_counter() - t0)

    rebuild_runs = _repeat(config.runs, rebuild_rate)
    scan_runs = _repeat(config.runs, lambda: raw_scan_and_write_rate(dsn))
    figures.append(Figure("projection rebuild (progress)", "events/s", rebuild_runs,
                          "ordered scan + JSON decode + batched write", scan_runs, goal="≥ 40% of the ceiling",
                          note=f"{head:,} events; {head / statistics.median(rebuild_runs):.0f} s per rebuild"))

    # 5. An as-of query over the long history vs the current-state query (progress alone is read).
    engine.catch_up(["progress"])
    figures.append(as_of_figure(app.database, head, config.runs, "as-of progress query"))
    close_database(url)
    figures.extend(run_sqlite_bench(config, say))
    _judge(figures)
    config.output.write_text(json.dumps([{**asdict(f), "median": f.median, "ratio": f.ratio} for f in figures],
                                        indent=2, default=str))
    return figures


def run_sqlite_bench(config: BenchConfig, say: Callable[[str], None]) -> list[Figure]:
    """The embedded default: bulk import, rebuild and as-of queries on one SQLite file, against raw sqlite3."""
    import sqlite3

    from api.generator import generate
    from domain.application import SalesPlanning
    from domain.persistence import close_database, open_database
    from projections.engine import ProjectionEngine
    from projections.registry import all_projections

    events = min(config.events, config.sqlite_events)
    path = Path(tempfile.mkdtemp(prefix="salesplan-bench-sqlite-")) / "bench.db"
    url = f"sqlite:///{path}"
    app = SalesPlanning(open_database(url))
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    say(f"SQLite: generating {events:,} events…")
    started = time.perf_counter()
    report = generate(app, events=events, seed=2)
    import_rate = report.events / (time.perf_counter() - started)
    raw = sqlite3.connect(path)
    rows = raw.execute("SELECT originator_id, originator_version, topic, state FROM salesplan_events ORDER BY id").fetchall()
    raw.execute("CREATE TABLE bench_raw (id INTEGER PRIMARY KEY, originator_id, originator_version, topic, state)")
    raw.execute("CREATE TABLE bench_rows (position INTEGER PRIMARY KEY, kind TEXT, effective_at TEXT, payload TEXT)")

    def batched_insert() -> float:
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
        for position, topic, state in raw.execute("SELECT id, topic, state FROM salesplan_events ORDER BY id"):
            data = json.loads(state)
            pending.append((position, topic, str(data.get("effective_at")), str(len(data))))
            if len(pending) >= 500:
                raw.executemany("INSERT INTO bench_rows VALUES (?, ?, ?, ?)", pending)
                raw.commit()
                pending = []
        raw.executemany("INSERT INTO bench_rows VALUES (?, ?, ?, ?)", pending)
        raw.commit()
        return report.events / (time.perf_counter() - t0)

    figures = [Figure("SQLite: bulk import (generator → event store)", "events/s", [import_rate],
                      "raw sqlite3 batched INSERT of the same rows", _repeat(config.runs, batched_insert),
                      goal="≥ 50% of the batched insert", note=f"{report.events:,} events")]
    head = engine.head()
    say(f"SQLite: rebuilding progress over {head:,} events…")

    def rebuild_rate() -> float:
        t0 = time.perf_counter()
        engine.rebuild("progress")
        return head / (time.perf_counter() - t0)

    figures.append(Figure("SQLite: projection rebuild (progress)", "events/s", _repeat(config.runs, rebuild_rate),
                          "raw ordered scan + JSON decode + batched write", _repeat(config.runs, scan_and_write),
                          goal="≥ 40% of the ceiling", note=f"{head:,} events"))
    raw.close()
    figures.append(as_of_figure(app.database, head, config.runs, "SQLite: as-of progress query"))
    close_database(url)
    return figures


def as_of_figure(database: Any, head: int, runs: int, label: str) -> Figure:
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
    return Figure(f"{label} (a plan as known halfway through the log)", "ms", as_of, "the current-state query",
                  current, goal="≤ 2× the current-state query (ratio ≤ 2)")


def _stored_rows(dsn: str, limit: int) -> list[tuple[str, int, str, bytes]]:
    import psycopg2

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT originator_id::text, originator_version, topic, state FROM salesplan_events ORDER BY id "
                "LIMIT %s", (limit,))
    rows = [(r[0], r[1], r[2], bytes(r[3])) for r in cur.fetchall()]
    conn.close()
    return rows


def _judge(figures: list[Figure]) -> None:
    for f in figures:
        if f.goal is None:
            continue
        if f.goal.startswith("< 100 ms"):
            f.goal_met = f.median < 100
        elif "ratio ≤ 2" in f.goal:
            f.goal_met = f.ratio is not None and f.ratio <= 2
        elif f.goal.startswith("≥ 50%"):
            f.goal_met = f.ratio is not None and f.ratio >= 0.5
        elif f.goal.startswith("≥ 40%"):
            f.goal_met = f.ratio is not None and f.ratio >= 0.4

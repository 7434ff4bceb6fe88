"""The `salesplan` command: serve the API, run and rebuild projections, write a demo, manage tokens."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import traceback
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from api.redaction import RedactingFilter, install_log_redaction, mask_url, redact
from api.settings import Settings, env_name


def _settings_help() -> str:
    """Every setting's environment variable, its default and what it does (for ``--help``)."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, str):
            shown = mask_url(default)
        elif isinstance(default, dict | list):
            shown = json.dumps(default, default=str)
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
        lines.append(f"  {env_name(name)} (default {shown}){': ' + field.description if field.description else ''}")
    lines.append("  SALESPLAN_DEBUG=1 prints the traceback of an unexpected error (passwords masked)")
    # \b keeps click from re-flowing the paragraph: one setting a line.
    return "Settings, read from the environment:\n\n\b\n" + "\n".join(lines)


cli = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False)  # main() prints errors, with secrets masked
token_cli = typer.Typer(help="Issue, list and revoke API bearer tokens.", no_args_is_help=True)
cli.add_typer(token_cli, name="token")
# soft_wrap: lines are never broken at a guessed width (logs and pipes have none).
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from api.build import version

        typer.echo(f"salesplan {version()}")
        raise typer.Exit()


@cli.callback(epilog=_settings_help())
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """salesplan: event-sourced sales-plan management."""


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()


def _connect(settings: Settings) -> Any:
    """The configured database; a URL that cannot be used is a clear error, not a traceback."""
    import sqlalchemy.exc

    from domain.persistence import open_database

    try:
        return open_database(settings.database_url, lock_timeout_ms=settings.lock_timeout_ms)
    except (sqlalchemy.exc.ArgumentError, ValueError, ImportError) as error:
        err.print(f"{env_name('database_url')}={mask_url(settings.database_url)} cannot be used: "
                  f"{redact(str(error))}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _database(settings: Settings) -> Any:
    """The database alone (no projections): what the token commands need, and all they touch."""
    from api.tokens import ensure_table

    database = _connect(settings)
    ensure_table(database)
    return database


def _open(settings: Settings, metrics: Any = None) -> Any:
    from domain.application import SalesPlanning
    from projections.engine import ProjectionEngine
    from projections.processes import alerts
    from projections.registry import all_projections

    app = SalesPlanning(_connect(settings))
    if metrics is None:
        engine = ProjectionEngine(app, all_projections(), batch_size=settings.projection_batch_size)
    else:
        from api.metrics import MeasuredEngine

        engine = MeasuredEngine(app, all_projections(), settings.projection_batch_size, metrics)
    engine.setup()
    alerts.setup(app.database)
    return app, engine


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A table on a terminal; plain aligned columns, never truncated, anywhere else (pipes, logs)."""
    if console.is_terminal:
        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with passwords masked, and the salesplan loggers on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = json.loads(json.dumps(LOGGING_CONFIG))
    config["filters"] = {"redact": {"()": RedactingFilter}}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    config["loggers"]["salesplan"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["root"] = {"handlers": ["default"], "level": "WARNING"}  # libraries' warnings, masked too
    return config


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="API worker processes (default: SALESPLAN_WORKERS, else one "
                                                     "per core).", min=1)] = None,
) -> None:
    """Run the HTTP API (with the projections, alerts and webhooks in-process unless SALESPLAN_INLINE_PROJECTIONS=false)."""
    import os

    import uvicorn

    from api.app import create_app

    settings = Settings()
    host, port = host or settings.host, port or settings.port
    count = workers or settings.workers or os.cpu_count() or 1
    inline = "projections, alerts and webhooks inline" if settings.inline_projections else "no inline projections"
    err.print(f"salesplan on {mask_url(settings.database_url)} ({inline}, {count} worker(s)); docs at "
              f"http://{host}:{port}/docs", markup=False, highlight=False)
    if count == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", log_config=_log_config())
        return
    # Several workers: the tables are set up here, once, before they start (workers creating
    # them at once would race); and the inline projections, alerts and webhooks (if any) run
    # here too, in one process only, never once per worker.
    from api.processes import run_processes
    from api.tokens import ensure_table

    _app, engine = _open(settings)
    ensure_table(engine.database)
    stop = threading.Event()
    threads = []
    if settings.inline_projections:
        # Commands in the workers cannot wake this process: on SQLite it polls more often instead.
        poll = settings.projection_poll_seconds if engine.database.is_postgres else min(settings.projection_poll_seconds,
                                                                                        0.05)
        threads = [
            threading.Thread(target=engine.run_forever, args=(stop, poll), name="salesplan-projections",
                             kwargs={"on_error": lambda e: err.print(f"projection stopped: {e}")}, daemon=True),
            threading.Thread(target=run_processes, args=(engine, settings, stop), name="salesplan-processes",
                             daemon=True),
        ]
        for thread in threads:
            thread.start()
        os.environ["SALESPLAN_INLINE_PROJECTIONS"] = "false"  # read by each worker's settings
    try:
        _run_workers(host, port, count)
    finally:
        stop.set()
        engine.wake.set()
        for thread in threads:
            thread.join(timeout=30)


def _run_workers(host: str, port: int, count: int) -> None:
    """uvicorn's worker processes, on a socket bound here as TCP.

    uvicorn binds its shared socket without naming the protocol, so asyncio does not set
    TCP_NODELAY on the connections the workers accept, and every small response then waits
    for the client's delayed ACK (~40 ms). The same supervisor, on a socket that says TCP.
    """
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("api.app:create_app", factory=True, host=host, port=port, workers=count,
                            log_level="info", log_config=_log_config())
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    Multiprocess(config, sockets=[sock]).run()


@cli.command()
def project() -> None:
    """Run the projection workers, the alert evaluation and webhook deliveries until stopped (SIGTERM/Ctrl-C)."""
    from prometheus_client import start_http_server

    from api.metrics import Metrics
    from api.processes import run_processes

    _configure_logging()
    log = logging.getLogger("salesplan.worker")
    settings = Settings()
    metrics = Metrics(http=False)
    _app, engine = _open(settings, metrics)
    stop = threading.Event()

    def stopping(*_: Any) -> None:
        stop.set()
        engine.wake.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stopping)
    server = None
    if settings.worker_metrics:
        try:
            server, _thread = start_http_server(settings.worker_metrics_port, settings.worker_metrics_host,
                                                registry=metrics.registry)
        except OSError as error:
            # Projecting matters more than being watched: carry on, loudly, without the endpoint.
            log.error("cannot serve metrics on %s:%d (%s): projecting without them; set %s to a free port, or %s=false",
                      settings.worker_metrics_host, settings.worker_metrics_port, error,
                      env_name("worker_metrics_port"), env_name("worker_metrics"))
        else:
            log.info("metrics on http://%s:%d/metrics", settings.worker_metrics_host, server.server_port)
    log.info("projecting %s from %s; SIGTERM or Ctrl-C stops", ", ".join(engine.projections),
             mask_url(settings.database_url))
    processes = threading.Thread(target=run_processes, args=(engine, settings, stop), kwargs={"metrics": metrics},
                                 name="salesplan-processes", daemon=True)
    processes.start()
    try:
        engine.run_forever(stop, settings.projection_poll_seconds,
                           on_error=lambda e: log.error("projection stopped: %s", e))
    finally:
        stop.set()
        processes.join(timeout=30)
        if server is not None:
            server.shutdown()
            server.server_close()
    log.info("stopped")


@cli.command()
def rebuild(
    names: Annotated[list[str] | None, typer.Argument(help="Projections to rebuild (default: all).")] = None,
    processes: Annotated[int | None, typer.Option(help="Processes sharing the work (default: one per core; SQLite: 1).",
                                                  min=1)] = None,
) -> None:
    """Replay projections from zero into new tables, then switch (the old ones answer meanwhile)."""
    import time

    from projections.registry import rebuild as rebuild_projections

    settings = Settings()
    _app, engine = _open(settings)
    chosen = names or list(engine.projections)
    unknown = [n for n in chosen if n not in engine.projections]
    if unknown:
        raise typer.BadParameter(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(engine.projections)}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>10} ev/s"), TimeRemainingColumn())
    started = time.monotonic()
    with Progress(*columns, console=console) as bar:
        tasks = {name: bar.add_task(name, total=None, rate="") for name in chosen}

        def report(name: str, done: int, total: int) -> None:
            elapsed = time.monotonic() - started
            bar.update(tasks[name], completed=done, total=total, rate=f"{done / elapsed:,.0f}" if elapsed else "")

        switched = rebuild_projections(settings.database_url, chosen, processes=processes,
                                       lock_timeout_ms=settings.lock_timeout_ms,
                                       batch_size=settings.projection_batch_size, progress=report)
        for name, position in switched.items():
            bar.update(tasks[name], description=f"{name} ✓ switched at {position}")


@cli.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Each projection's position, the log's head, the lag and any error."""
    from projections import bi

    settings = Settings()
    app, engine = _open(settings)
    statuses = engine.status()
    with app.database.engine.connect() as conn:
        failures = bi.rebuild_failures(conn)
    if as_json:
        from dataclasses import asdict

        head = statuses[0].head if statuses else engine.head()
        print(json.dumps({"database": mask_url(settings.database_url), "head": head,
                          "projections": [asdict(s) for s in statuses],
                          "rebuild_failures": {name: {"failed_at": f.failed_at.isoformat(), "error": f.error}
                                               for name, f in failures.items()}}, indent=2))
        return
    err.print(f"database {mask_url(settings.database_url)}", markup=False, highlight=False)
    _print_table(["projection", "status", "position", "head", "lag (events)", "lag (s)", "error", "last rebuild"], [
        [s.name, s.status, str(s.position), str(s.head), str(s.lag_events), f"{s.lag_seconds:.1f}",
         f"at {s.error_position}: {s.error}" if s.error else "",
         f"failed {failures[s.name].failed_at:%Y-%m-%d %H:%M}, rolled back: {failures[s.name].error}"
         if s.name in failures else ""] for s in statuses])


@cli.command()
def retry(name: str) -> None:
    """Let a projection stopped by a failing event try it again (after the fix is deployed)."""
    _app, engine = _open(Settings())
    if name not in engine.projections:
        err.print(f"no projection {name!r}; known: {', '.join(engine.projections)}", markup=False)
        raise typer.Exit(1)
    current = next(s for s in engine.status() if s.name == name)
    if current.status != "failed":
        err.print(f"{name} is {current.status}, not stopped by an error: nothing to retry", markup=False)
        return
    engine.retry(name)
    err.print(f"{name}: error at position {current.error_position} cleared; the workers retry from {current.position}",
              markup=False)


@cli.command()
def demo(seed: Annotated[int, typer.Option(help="Random seed.")] = 7) -> None:
    """Write a realistic demo quarter into the configured database and print what was written."""
    from api.demo import write_demo

    app, engine = _open(Settings())
    if not err.is_terminal:  # logs and pipes: a line now and then instead of a live bar
        def report(events: int) -> None:
            if events % 500 == 0:
                err.print(f"demo: {events:,} events written…", highlight=False)

        summary = write_demo(app, seed=seed, progress=report)
        err.print(f"demo: {summary.events:,} events written; bringing the projections up to date…", highlight=False)
        engine.catch_up()
    else:
        with Progress(TextColumn("{task.description}"), TextColumn("{task.completed:,.0f} events"), console=err) as bar:
            task = bar.add_task("writing the demo quarter", total=None)
            summary = write_demo(app, seed=seed, progress=lambda events: bar.update(task, completed=events))
            bar.update(task, description="bringing the projections up to date", completed=summary.events)
            engine.catch_up()
    console.print(summary.format())


@token_cli.command("create")
def token_create(
    member: Annotated[UUID | None, typer.Option(help="The member the token acts as (role from the member).")] = None,
    role: Annotated[str | None, typer.Option(help="admin | manager | rep | viewer (default: the member's role).")] = None,
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Issue a bearer token: the secret alone on stdout (shown once, stored only as a hash), the rest on stderr."""
    from api.tokens import TokenError, create_token

    database = _database(Settings())
    try:
        token_id, secret = create_token(database, role=role, member_id=member, label=label)
    except TokenError as error:
        err.print(f"{error}", markup=False)
        raise typer.Exit(2) from None
    err.print(f"token {token_id} created; its secret follows, shown only this once", markup=False)
    print(secret)


@token_cli.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token: it is refused from the next request on."""
    from api.tokens import revoke_token, token_info

    database = _database(Settings())
    if revoke_token(database, token_id):
        err.print(f"revoked {token_id}", markup=False)
        return
    info = token_info(database, token_id)
    if info is None:
        err.print(f"no token {token_id!r} (salesplan token list shows them)", markup=False)
        raise typer.Exit(1)
    err.print(f"{token_id} was already revoked at {info.revoked_at}", markup=False)


@token_cli.command("list")
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """List tokens (never their secrets)."""
    from api.tokens import list_tokens

    tokens = list_tokens(_database(Settings()))
    keys = ("id", "role", "member_id", "label", "created_at", "revoked_at")
    if as_json:
        print(json.dumps({"tokens": [{k: getattr(t, k) for k in keys} for t in tokens]}, default=str, indent=2))
        return
    _print_table(["id", "role", "member", "label", "created", "revoked"],
                 [[str(getattr(t, k) or "") for k in keys] for t in tokens])


alerts_cli = typer.Typer(help="Deviation alerts and their webhook deliveries.", no_args_is_help=True)
cli.add_typer(alerts_cli, name="alerts")


@alerts_cli.command("evaluate")
def alerts_evaluate() -> None:
    """Evaluate deviation alerts now (serve and project also do it every SALESPLAN_ALERT_EVALUATION_SECONDS)."""
    from datetime import UTC, datetime

    from projections.processes import alerts

    settings = Settings()
    app, engine = _open(settings)
    engine.catch_up()
    for alert in alerts.raise_alerts(app.database, at=datetime.now(UTC), config=settings.alert_config()):
        console.print(f"{alert.kind:18} {alert.message}", markup=False)


@alerts_cli.command("deliver")
def alerts_deliver() -> None:
    """Deliver the webhook notifications that are due now (retries keep their backoff)."""
    from datetime import UTC, datetime

    from api.processes import deliver

    settings = Settings()
    app, _engine = _open(settings)
    run = deliver(app.database, settings, datetime.now(UTC))
    console.print(f"{len(run.delivered)} delivered, {len(run.failed)} failed (retried later)")


@cli.command()
def bench(
    events: Annotated[int, typer.Option(help="Size of the generated history rebuilt by the benchmark.")] = 1_000_000,
    runs: Annotated[int, typer.Option(help="Repetitions of each measurement (median, min, max).")] = 3,
    seconds: Annotated[float, typer.Option(help="Length of each load run.")] = 4.0,
    database_url: Annotated[str, typer.Option(help="The PostgreSQL database to benchmark in (emptied; created if "
                                                   "missing).")] = "postgresql+psycopg2://root@127.0.0.1:5432/salesplan_bench",
    only: Annotated[list[str] | None, typer.Option(help="Run only these sections (repeatable): import, rebuild, "
                                                        "writes, reads, as_of, sqlite.")] = None,
    reuse: Annotated[bool, typer.Option(help="Keep a history of --events already in the database instead of "
                                             "importing it again.")] = False,
) -> None:
    """Measure salesplan against the machine's ceilings; print one table and write bench-results.json."""
    from api.bench import BenchConfig, render, run_bench

    config = BenchConfig(database_url=database_url, events=events, runs=runs, seconds=seconds, only=tuple(only or ()),
                         reuse=reuse)
    figures = run_bench(config, lambda line: console.print(f"[dim]{line}[/dim]"))
    Console(width=250).print(render(figures))
    console.print(f"written to {config.output}")


def main() -> None:
    """The ``salesplan`` entry point: an unexpected error is one masked message (a traceback with SALESPLAN_DEBUG)."""
    import os

    try:
        cli()
    except Exception as error:
        import sqlalchemy.exc
        from eventsourcing.persistence import OperationalError as StoreOperationalError

        from domain.application import StoreUnavailable

        if isinstance(error, sqlalchemy.exc.OperationalError | StoreOperationalError | StoreUnavailable):
            first = str(getattr(error, "orig", None) or error).strip().splitlines()
            message = f"the database is unavailable: {first[0] if first else type(error).__name__}"
        else:
            message = f"{type(error).__name__}: {error}"
        if os.environ.get("SALESPLAN_DEBUG"):
            sys.stderr.write(redact("".join(traceback.format_exception(error))))
        sys.stderr.write(f"salesplan: {redact(message)}\n")
        sys.exit(1)


@cli.command("import-crm")
def import_crm_command(
    directory: Annotated[str, typer.Argument(help="Directory with sales_teams.csv, products.csv, accounts.csv and "
                                                  "sales_pipeline.csv (the CRM Sales Opportunities layout).")],
    batch_size: Annotated[int, typer.Option(help="Aggregates saved per transaction.", min=1)] = 500,
    company: Annotated[str, typer.Option(help="Name of the company unit the regional offices belong to.")] = "Company",
    refused: Annotated[str | None, typer.Option(help="Write every refused row (file, row, reason) to this CSV.")] = None,
    catch_up: Annotated[bool, typer.Option(help="Bring the projections up to date afterwards.")] = True,
) -> None:
    """Import a CRM export as back-dated history; running it again adds only what is new."""
    import csv
    from pathlib import Path

    from api.importer import CrmImportError, import_crm

    app, engine = _open(Settings())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("importing entities", total=None)
            report = import_crm(app, Path(directory), batch_size=batch_size, company=company,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    except CrmImportError as error:
        console.print(f"[red]nothing imported: {error}[/red]")
        raise typer.Exit(code=1) from None
    table = Table("", *report.rows_read, title="rows read")
    table.add_row("rows", *(str(n) for n in report.rows_read.values()))
    console.print(table)
    kinds = ("unit", "member", "product", "account", "deal")
    table = Table("", *(f"{k}s" for k in kinds), title="entities")
    table.add_row("imported", *(str(report.imported[k]) for k in kinds))
    table.add_row("skipped (already imported)", *(str(report.already_imported[k]) for k in kinds))
    console.print(table)
    shown = 50
    if report.refused:
        console.print(f"[yellow]refused {len(report.refused)} row(s):[/yellow]")
        for r in report.refused[:shown]:
            console.print(f"  {r.file} row {r.row}: {r.reason}", markup=False)
        if len(report.refused) > shown:
            console.print(f"  … and {len(report.refused) - shown} more" + ("" if refused else " (--refused FILE lists all)"))
    else:
        console.print("refused: none")
    if refused:
        with open(refused, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "row", "reason"])
            writer.writerows((r.file, r.row, r.reason) for r in report.refused)
        console.print(f"refused rows written to {refused}")
    console.print("mappings applied:" if report.mappings else "mappings applied: none")
    for (what, source, target), rows in sorted(report.mappings.items()):
        console.print(f"  {what}: {source!r} → {target!r} ({rows} row(s))", markup=False)
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")
    console.print(f"{report.events:,} events written in {report.seconds:.1f} s ({report.events_per_second:,.0f} events/s)")
    if catch_up and report.events:
        with console.status("bringing the projections up to date…"):
            engine.catch_up()
        console.print("projections up to date")


@cli.command("generate")
def generate_command(
    events: Annotated[int, typer.Option(help="Generate at least this many events.", min=1)],
    seed: Annotated[int, typer.Option(help="One seed, one history; a seed already generated here is refused.")] = 1,
) -> None:
    """Generate a large, realistic, back-dated history (for benchmarks) into the configured database."""
    from api.generator import GenerateError, generate

    app, _engine = _open(Settings())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>10} ev/s"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("generating events", total=events, rate="")
            started = [0.0]

            def report_progress(done: int, total: int) -> None:
                import time

                now = time.monotonic()
                started[0] = started[0] or now
                rate = done / (now - started[0]) if now > started[0] else 0
                bar.update(task, completed=min(done, total), rate=f"{rate:,.0f}")

            report = generate(app, events=events, seed=seed, progress=report_progress)
    except GenerateError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(code=1) from None
    console.print(report.format(), markup=False)
    console.print("[dim]the projections catch up when `salesplan project` or `salesplan serve` runs "
                  "(or `salesplan rebuild`)[/dim]")

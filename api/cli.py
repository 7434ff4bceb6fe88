"""The `salesplan` command: serve the API, run and rebuild projections, write a demo, manage tokens."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from api.settings import Settings

cli = typer.Typer(help="salesplan: event-sourced sales-plan management.", no_args_is_help=True, add_completion=False)
token_cli = typer.Typer(help="Issue, list and revoke API bearer tokens.", no_args_is_help=True)
cli.add_typer(token_cli, name="token")
console = Console()


def _open(settings: Settings) -> Any:
    from domain.application import SalesPlanning
    from domain.persistence import open_database
    from projections.engine import ProjectionEngine
    from projections.registry import all_projections

    app = SalesPlanning(open_database(settings.database_url, lock_timeout_ms=settings.lock_timeout_ms))
    engine = ProjectionEngine(app, all_projections(), batch_size=settings.projection_batch_size)
    engine.setup()
    from projections.processes import alerts

    alerts.setup(app.database)
    return app, engine


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
) -> None:
    """Run the HTTP API (with the projections caught up in-process unless SALESPLAN_INLINE_PROJECTIONS=false)."""
    import uvicorn

    from api.app import create_app

    settings = Settings()
    console.print(f"salesplan on [bold]{settings.database_url}[/bold]; docs at http://{host or settings.host}:"
                  f"{port or settings.port}/docs")
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port, log_level="info")


@cli.command()
def project() -> None:
    """Run the projection workers until stopped (PostgreSQL: woken by new events; SQLite: polling)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    _app, engine = _open(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"projecting {', '.join(engine.projections)} from {settings.database_url}; Ctrl-C stops")
    watcher = threading.Thread(target=_alert_loop, args=(_app, stop, settings), daemon=True)
    watcher.start()
    engine.run_forever(stop, settings.projection_poll_seconds,
                       on_error=lambda e: console.print(f"[red]{e}[/red]"))
    watcher.join(timeout=10)


def _alert_loop(app: Any, stop: threading.Event, settings: Settings) -> None:
    """Alerts depend on the passage of time: evaluate them now and then, deliver webhooks often."""
    from datetime import UTC, datetime

    from projections.processes import alerts, webhooks

    log = logging.getLogger("salesplan.alerts")
    next_evaluation = 0.0
    while not stop.wait(settings.alert_delivery_seconds):
        try:
            if time.monotonic() >= next_evaluation:
                raised = alerts.raise_alerts(app.database, at=datetime.now(UTC), config=settings.alert_config())
                log.info("alerts evaluated: %d open", len(raised))
                next_evaluation = time.monotonic() + settings.alert_evaluation_seconds
            webhooks.deliver_pending(app.database, now=datetime.now(UTC))
        except Exception:  # a failed round is retried next round; deliveries stay queued
            log.exception("alert round failed; retrying")


@cli.command()
def rebuild(names: Annotated[list[str] | None, typer.Argument(help="Projections to rebuild (default: all).")] = None) -> None:
    """Replay projections from zero into new tables, then switch (the old ones answer meanwhile)."""
    settings = Settings()
    _app, engine = _open(settings)
    chosen = names or list(engine.projections)
    unknown = [n for n in chosen if n not in engine.projections]
    if unknown:
        raise typer.BadParameter(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(engine.projections)}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>10} ev/s"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        for name in chosen:
            task = bar.add_task(name, total=None, rate="")
            started = [0.0]

            def report(done: int, total: int, task: Any = task, started: list[float] = started) -> None:
                import time

                now = time.monotonic()
                started[0] = started[0] or now
                rate = done / (now - started[0]) if now > started[0] else 0
                bar.update(task, completed=done, total=total, rate=f"{rate:,.0f}")

            position = engine.rebuild(name, progress=report)
            bar.update(task, description=f"{name} ✓ switched at {position}")


@cli.command()
def status() -> None:
    """Each projection's position, the log's head, and the lag."""
    from projections import bi

    app, engine = _open(Settings())
    with app.database.engine.connect() as conn:
        failures = bi.rebuild_failures(conn)
    table = Table("projection", "status", "position", "head", "lag (events)", "lag (s)", "error", "last rebuild")
    for s in engine.status():
        failed = failures.get(s.name)
        table.add_row(s.name, s.status, str(s.position), str(s.head), str(s.lag_events), f"{s.lag_seconds:.1f}",
                      f"at {s.error_position}: {s.error}" if s.error else "",
                      f"failed {failed.failed_at:%Y-%m-%d %H:%M}, rolled back: {failed.error}" if failed else "")
    console.print(table)


@cli.command()
def retry(name: str) -> None:
    """Let a projection stopped by a failing event try it again (after the fix is deployed)."""
    _app, engine = _open(Settings())
    engine.retry(name)
    console.print(f"{name}: error cleared; the workers will retry from its position")


@cli.command()
def demo(seed: Annotated[int, typer.Option(help="Random seed.")] = 7) -> None:
    """Write a realistic demo quarter into the configured database and print what was written."""
    from api.demo import write_demo

    app, engine = _open(Settings())
    summary = write_demo(app, seed=seed)
    engine.catch_up()
    console.print(summary.format())


@token_cli.command("create")
def token_create(
    member: Annotated[UUID | None, typer.Option(help="The member the token acts as (role from the member).")] = None,
    role: Annotated[str | None, typer.Option(help="admin | manager | rep | viewer (default: the member's role).")] = None,
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Issue a bearer token; the secret is shown once and stored only as a hash."""
    from api.tokens import TokenError, create_token

    app, _engine = _open(Settings())
    try:
        token_id, secret = create_token(app.database, role=role, member_id=member, label=label)
    except TokenError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(f"token id {token_id}\n{secret}")


@token_cli.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token: it is refused from the next request on."""
    from api.tokens import revoke_token

    app, _engine = _open(Settings())
    revoke_token(app.database, token_id)
    console.print(f"revoked {token_id}")


@token_cli.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from api.tokens import list_tokens

    app, _engine = _open(Settings())
    table = Table("id", "role", "member", "label", "created", "revoked")
    for t in list_tokens(app.database):
        table.add_row(*(str(getattr(t, k) or "") for k in ("id", "role", "member_id", "label", "created_at",
                                                           "revoked_at")))
    console.print(table)


alerts_cli = typer.Typer(help="Deviation alerts and their webhook deliveries.", no_args_is_help=True)
cli.add_typer(alerts_cli, name="alerts")


@alerts_cli.command("evaluate")
def alerts_evaluate() -> None:
    """Evaluate deviation alerts now (the projection worker also does this periodically)."""
    from datetime import UTC, datetime

    from projections.processes import alerts

    settings = Settings()
    app, engine = _open(settings)
    engine.catch_up()
    for alert in alerts.raise_alerts(app.database, at=datetime.now(UTC), config=settings.alert_config()):
        console.print(f"{alert.kind:18} {alert.message}")


@alerts_cli.command("deliver")
def alerts_deliver() -> None:
    """Deliver queued webhook notifications now (retries keep their backoff)."""
    from datetime import UTC, datetime

    from projections.processes import webhooks

    app, _engine = _open(Settings())
    console.print(webhooks.deliver_pending(app.database, now=datetime.now(UTC)))


@cli.command()
def bench(
    events: Annotated[int, typer.Option(help="Size of the generated history rebuilt by the benchmark.")] = 1_000_000,
    runs: Annotated[int, typer.Option(help="Repetitions of each measurement (median, min, max).")] = 3,
    seconds: Annotated[float, typer.Option(help="Length of each load run.")] = 4.0,
    admin_url: Annotated[str, typer.Option(help="A PostgreSQL database to create the bench database from.")] =
        "postgresql+psycopg2://root@127.0.0.1:5432/postgres",
) -> None:
    """Measure salesplan against the machine's ceilings; print one table and write bench-results.json."""
    from api.bench import BenchConfig, run_bench

    config = BenchConfig(admin_url=admin_url, events=events, runs=runs, seconds=seconds)
    figures = run_bench(config, lambda line: console.print(f"[dim]{line}[/dim]"))
    table = Table("measure", "median", "min", "max", "unit", "ceiling (median)", "ratio", "goal")
    for f in figures:
        ceiling = f"{f.ceiling_median:,.2f} ({f.ceiling})" if f.ceiling_median is not None else ""
        verdict = "" if f.goal is None else f"{f.goal}: " + ("[green]met[/green]" if f.goal_met else "[red]MISSED[/red]")
        table.add_row(f.name + (f" [dim]{f.note}[/dim]" if f.note else ""), f"{f.median:,.2f}", f"{min(f.runs):,.2f}",
                      f"{max(f.runs):,.2f}", f.unit, ceiling, "" if f.ratio is None else f"{f.ratio:.2f}", verdict)
    Console(width=250).print(table)
    console.print(f"written to {config.output}")


def main() -> None:
    cli()


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

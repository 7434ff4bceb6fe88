"""The `salesplan` command: serve the API, run and rebuild projections, write a demo, manage tokens."""

from __future__ import annotations

import logging
import signal
import threading
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
    engine.run_forever(stop, settings.projection_poll_seconds,
                       on_error=lambda e: console.print(f"[red]{e}[/red]"))


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
    _app, engine = _open(Settings())
    table = Table("projection", "status", "position", "head", "lag (events)", "lag (s)", "error")
    for s in engine.status():
        table.add_row(s.name, s.status, str(s.position), str(s.head), str(s.lag_events), f"{s.lag_seconds:.1f}",
                      f"at {s.error_position}: {s.error}" if s.error else "")
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
    from api.tokens import create_token

    app, _engine = _open(Settings())
    token_id, secret = create_token(app.database, role=role, member_id=member, label=label, app=app)
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


def main() -> None:
    cli()

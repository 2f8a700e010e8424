"""The `tessera` command line."""

from __future__ import annotations

import json
import sys
import threading
from typing import TYPE_CHECKING

import typer
from redis import Redis

from db.engine import get_engine
from tessera.logs import configure_logging
from tessera.redis_clients import connect_redis
from tessera.settings import get_settings

if TYPE_CHECKING:
    from ops.views import ShardRow, ShardsView

app = typer.Typer(
    help="Tessera: stock management for a tile shop, as single-writer shard queues.", no_args_is_help=True
)


@app.command()
def migrate() -> None:
    """Take the database (empty or not) to the newest schema (one revision at a time, with a
    progress bar on a terminal: a revision with data work can take a while on a big inbox)."""
    from db.migrate import pending_revisions, upgrade
    from ops.progress import tracked

    url = get_settings().database_url
    pending = pending_revisions(url)
    for revision in tracked(pending, "migrating"):
        upgrade(url, revision)
    typer.echo(f"database is at head ({len(pending)} revision(s) applied)")


@app.command()
def worker(
    shards: str = typer.Option(None, "--shards", help="Shards to serve: '0-7', '1,3,5'; all by default."),
    name: str = typer.Option(
        None, "--name", help="Holder name in leases and batch logs (host:pid by default)."
    ),
    threads: int = typer.Option(None, "--threads", help="Dramatiq worker threads (TESSERA_WORKER_THREADS)."),
    metrics_port: int = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics on this port."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Address for --metrics-port."),
    spread: bool = typer.Option(
        False,
        "--spread",
        help="Share the shards with the other workers serving the same ones (by default the first takes "
        "them all and the others stand by).",
    ),
) -> None:
    """Lease the shards and apply their commands until stopped (SIGTERM / Ctrl-C)."""
    from workers.process import WorkerProcess, parse_shards

    settings = get_settings()
    if threads:
        settings = settings.model_copy(update={"worker_threads": threads})
    configure_logging(settings.log_level)
    try:
        served = parse_shards(shards, settings.shards)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--shards") from None
    WorkerProcess(
        settings, served, name=name, metrics_port=metrics_port, metrics_host=metrics_host, spread=spread
    ).run_forever()


@app.command()
def scheduler(
    once: bool = typer.Option(False, "--once", help="Sweep once and exit."),
) -> None:
    """Re-ring shards whose recorded commands were not applied (lost doorbells, dead workers, due expiries)."""
    from tessera.doorbells import Doorbells
    from tessera.signals import stop_on_termination
    from workers.sweep import run_sweeper, sweep

    settings = get_settings()
    configure_logging(settings.log_level)
    engine = get_engine(settings.database_url)
    doorbells = Doorbells.of(connect_redis(settings.redis_url), settings)
    if once:
        rang = sweep(engine, doorbells, settings.sweep_grace_seconds)
        typer.echo(json.dumps({"rang": rang}))
        return
    stop = threading.Event()
    stop_on_termination(stop)
    run_sweeper(
        engine,
        doorbells,
        interval=settings.sweep_interval_seconds,
        grace_seconds=settings.sweep_grace_seconds,
        stop=stop,
    )


@app.command()
def reconcile() -> None:
    """Check ledger = balances (every bucket), reserved = Σ active hold lines and valuation quantities =
    on_hand; exit 1 with a report on any difference (a progress bar over the products on a terminal)."""
    from db.reconcile import product_ranges
    from db.reconcile import reconcile as find_differences
    from ops.progress import tracked

    with get_engine(get_settings().database_url).connect() as conn:
        ranges = product_ranges(conn)
        total = sum(r.count for r in ranges)
        products = tracked(ranges, "reconciling products", total=total, size=lambda r: r.count)
        differences = find_differences(conn, products)
    if differences:
        typer.echo(f"{len(differences)} difference(s):")
        for difference in differences:
            typer.echo(f"  {difference}")
        sys.exit(1)
    typer.echo("reconcile: clean (ledger = balances, reserved = active hold lines, valuations = on_hand)")


@app.command()
def api(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", help="Server processes, each with its own recorder."),
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) until stopped."""
    import os
    import tempfile

    from producers.http.serve import serve

    settings = get_settings()
    configure_logging(settings.log_level)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One metrics registry across the processes: each writes its own files, /metrics reads them all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tessera-metrics-")
    serve(host, port, workers, settings.log_level)


tokens = typer.Typer(help="The HTTP API's bearer tokens: create, list, revoke.", no_args_is_help=True)
app.add_typer(tokens, name="token")


@tokens.command("create")
def token_create(
    role: str = typer.Option(..., "--role", help="checkout, payments, warehouse or ops."),
    name: str = typer.Option("", "--name", help="Who or what uses it (shown in lists and logs)."),
) -> None:
    """Create a token; it is printed once, as the last word of the output (only its hash is kept)."""
    from db.tokens import ROLES, create_token

    if role not in ROLES:
        raise typer.BadParameter(f"one of {', '.join(ROLES)}", param_hint="--role")
    with get_engine(get_settings().database_url).begin() as conn:
        created, token = create_token(conn, role, name or role)
    typer.echo(f"token {created.id} ({created.role}, {created.name}): {token}")


@tokens.command("list")
def token_list() -> None:
    """Every token: id, role, name, created, revoked."""
    from db.tokens import list_tokens

    with get_engine(get_settings().database_url).connect() as conn:
        for t in list_tokens(conn):
            revoked = f"revoked {t.revoked_at:%Y-%m-%d %H:%M:%S}" if t.revoked_at else "live"
            typer.echo(f"{t.id}  {t.role:<9}  {t.name}  created {t.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")


@tokens.command("revoke")
def token_revoke(
    token_id: int = typer.Argument(..., help="The token's id (see `tessera token list`)."),
) -> None:
    """Revoke a token: from now on it answers 401."""
    from db.tokens import revoke_token

    with get_engine(get_settings().database_url).begin() as conn:
        if not revoke_token(conn, token_id):
            typer.echo(f"no live token {token_id}", err=True)
            sys.exit(1)
    typer.echo(f"token {token_id} revoked")


PROBE_TIMEOUT_SECONDS = 5


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="The shards view as JSON, for machines."),
    max_age: float = typer.Option(
        30.0, "--max-age", help="Exit 1 when a shard has work waiting longer than this (seconds)."
    ),
) -> None:
    """Every shard: lease holder and epoch, pending commands and the oldest one's age, last batch,
    dead letters; then the totals. A probe: exit code 1 when work has waited past --max-age, 2 when
    PostgreSQL or Redis cannot be read within 5 s."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import DBAPIError

    from db.engine import make_engine
    from ops.views import shards_view

    settings = get_settings()
    # A probe answers in bounded time: a server that hangs is as bad as one that is down.
    ms = PROBE_TIMEOUT_SECONDS * 1000
    engine = make_engine(
        settings.database_url,
        connect_args={
            "connect_timeout": PROBE_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={ms}",
            "application_name": "tessera status",
        },
    )
    redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS
    )
    try:
        view = shards_view(engine, redis, settings)
    except (DBAPIError, RedisError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        typer.echo(f"tessera status: cannot read the shards: {reason}", err=True)
        sys.exit(2)
    late = [r.shard for r in view.shards if (r.oldest_age_seconds or 0.0) > max_age]
    if as_json:
        typer.echo(view.model_dump_json())
    else:
        _print_status(view, late)
    if late:
        sys.exit(1)


def _holder(row: ShardRow) -> str:
    if row.holder is None:
        return "—"
    return row.holder if row.alive else f"{row.holder} (gone)"


def _print_status(view: ShardsView, late: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Tessera shards at {view.at:%Y-%m-%d %H:%M:%S %Z}")
    for column in ("shard", "lease holder", "epoch", "pending", "oldest", "last batch", "dead letters"):
        table.add_column(column, justify="left" if column == "lease holder" else "right")
    for row in view.shards:
        style = "red" if not row.healthy or row.shard in late else None
        table.add_row(
            str(row.shard),
            _holder(row),
            "—" if row.epoch is None else str(row.epoch),
            str(row.pending),
            "—" if row.oldest_age_seconds is None else f"{row.oldest_age_seconds:.1f} s",
            "—"
            if row.last_batch_at is None
            else f"{(view.at - row.last_batch_at).total_seconds():.1f} s ago",
            str(row.dead_letters),
            style=style,
        )
    console = Console()
    console.print(table)
    oldest = "—" if view.oldest_age_seconds is None else f"{view.oldest_age_seconds:.1f} s"
    console.print(
        f"total: {view.pending} pending (oldest {oldest}), {view.dead_letters} dead letters; "
        f"unhealthy shards (work, no live worker): {view.unhealthy or 'none'}; "
        f"late (> max age): {late or 'none'}"
    )


dead_letters = typer.Typer(
    help="Commands parked after failing TESSERA_MAX_ATTEMPTS times: list them, requeue them.",
    no_args_is_help=True,
)
app.add_typer(dead_letters, name="dead-letters")


@dead_letters.command("list")
def dead_letters_list(
    as_json: bool = typer.Option(False, "--json", help="One JSON array, for machines."),
) -> None:
    """The parked commands, oldest first: key, kind, shard, product, error, tries, first and last failure."""
    from pydantic import TypeAdapter

    from db.dead_letters import DeadLetter
    from ops.views import dead_letters as parked

    dead = parked(get_engine(get_settings().database_url))
    if as_json:  # the same document as GET /v1/ops/dead-letters, serialized as FastAPI does
        typer.echo(TypeAdapter(list[DeadLetter]).dump_json(dead).decode())
        return
    if not dead:
        typer.echo("no dead letters")
        return
    for d in dead:
        typer.echo(
            f"{d.key}  {d.kind}  shard {d.shard}  {d.sku or '-'}  tries {d.attempts}  "
            f"first {d.first_failed_at:%Y-%m-%d %H:%M:%S}  last {d.last_failed_at:%Y-%m-%d %H:%M:%S}\n"
            f"    {d.error}"
        )


@dead_letters.command("requeue")
def dead_letters_requeue(
    key: str = typer.Argument(None, help="The idempotency key of the command to requeue."),
    everything: bool = typer.Option(False, "--all", help="Requeue every parked command."),
) -> None:
    """Make parked commands pending again: each is applied once, before what its shard has pending then."""
    from ops.views import requeue_dead

    if bool(key) == everything:
        raise typer.BadParameter("give one KEY or --all")
    settings = get_settings()
    requeued = requeue_dead(
        get_engine(settings.database_url),
        connect_redis(settings.redis_url),
        settings,
        None if everything else [key],
    )
    if key and not requeued:
        typer.echo(f"no dead letter with key {key!r}", err=True)
        sys.exit(1)
    typer.echo(f"requeued {len(requeued)} command(s)")


@app.command()
def demo(
    database_url: str = typer.Option(
        None, "--database-url", help="Use this (empty) PostgreSQL database instead of an embedded one."
    ),
    redis_url: str = typer.Option(
        None, "--redis-url", help="Use this Redis instead of an in-memory fakeredis."
    ),
    no_serve: bool = typer.Option(False, "--no-serve", help="Exit after the story instead of serving."),
    host: str = typer.Option("127.0.0.1", "--host", help="Where to serve the API and the dashboard."),
    port: int = typer.Option(8000, "--port", help="Port for the API and the dashboard."),
) -> None:
    """Run the whole system in one process with no servers installed, play a checkout → payment →
    expiry story, then serve the API and the ops dashboard on it until Ctrl-C (--no-serve: exit)."""
    from ops.demo import run_demo

    sys.exit(
        run_demo(database_url=database_url, redis_url=redis_url, serve=None if no_serve else (host, port))
    )


if __name__ == "__main__":
    app()

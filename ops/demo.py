"""`tessera demo`: the whole system in one process, with no servers installed.

An embedded PostgreSQL (the ``pgserver`` package: real PostgreSQL binaries, started on a Unix
socket in a temporary directory) and an in-memory Redis (one ``fakeredis`` server, whose Lua
support runs Dramatiq's broker scripts and the lease scripts) stand in for the production stack.
The demo migrates, starts a shard worker and the recovery sweep in threads, seeds a small tile
catalogue through the producer client, and plays a checkout → payment → expiry story, printing
what happens. Then it serves the API (the same app as `tessera api`, with the dashboard) on that
system until Ctrl-C or SIGTERM, unless told not to. Everything it starts it stops, however it ends
(an interrupt during the story too), and the temporary directory is removed.

``--database-url`` / ``--redis-url`` run the same story against real servers instead (the
database must hold no products yet; Redis keys go under a namespace of their own, removed after).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from redis import Redis
from sqlalchemy import Engine, text

from db.engine import make_engine, normalize_url
from db.migrate import upgrade
from domain.errors import TesseraError
from ops.story import DemoFailed, since, tell_story
from producers import StockClient
from tessera.doorbells import Doorbells
from tessera.logs import configure_logging
from tessera.settings import Settings
from workers.process import WorkerProcess
from workers.sweep import run_sweeper

SHARDS = 4

# -- the servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_postgres(say: Callable[[str], None]) -> Iterator[str]:
    """Start a throwaway PostgreSQL in a temporary directory; yield its SQLAlchemy URL."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver

    workdir = Path(tempfile.mkdtemp(prefix="tessera-demo-"))
    started = time.monotonic()
    server = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(workdir / "pgdata", cleanup_mode="delete")
        # pgserver listens on a Unix socket only: postgresql://postgres:@/postgres?host=/tmp/…/pgdata
        url = normalize_url(server.get_uri())
        say(f"  postgres  embedded PostgreSQL (pgserver) on a socket in {workdir}, up in {since(started)}")
        yield url
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def in_memory_redis() -> Redis:
    """One fakeredis server shared by the worker, the client and the sweeper (Lua via lupa)."""
    import fakeredis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    if client.eval("return redis.call('PING')", 0) not in (b"PONG", "PONG"):  # Dramatiq needs Lua
        raise DemoFailed("fakeredis cannot run Lua scripts: install fakeredis[lua]")
    return client


# -- the story -----------------------------------------------------------------------------------


def run_demo(
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    serve: tuple[str, int] | None = None,
    say: Callable[[str], None] = partial(print, flush=True),  # a pipe gets each line as it is told
) -> int:
    """Play the story; 0 when every step ended as expected, 1 otherwise, 130 when interrupted
    (Ctrl-C or SIGTERM) before it ended. With `serve` (host, port), then serve the API and the
    dashboard on the same system until interrupted (and exit 0)."""
    configure_logging("WARNING")  # the story is the output; worker logs only warnings and errors
    started = time.monotonic()
    say("Tessera demo: the whole system in one process, no servers installed")
    # SIGTERM stops the demo as Ctrl-C does, unwinding what it started (the default would leave the
    # embedded PostgreSQL, a process of its own, running).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with contextlib.ExitStack() as stack:
            # The port is taken first: if it is not free, the demo says so before playing anything.
            listening = _bind(*serve) if serve else None
            if listening is not None:
                stack.callback(listening.close)
            url = normalize_url(database_url) if database_url else stack.enter_context(embedded_postgres(say))
            if database_url:
                say(f"  postgres  {_redact(url)}")
            if redis_url:
                redis, namespace = Redis.from_url(redis_url), f"tessera-demo-{uuid.uuid4().hex[:8]}"
                stack.callback(_delete_namespace, redis, namespace)
                say(f"  redis     {redis_url} (keys under {namespace}:)")
            else:
                redis, namespace = in_memory_redis(), "tessera"
                say(
                    "  redis     in-memory fakeredis, shared by worker, client and sweeper (Lua scripts on lupa)"
                )
            settings = Settings(
                database_url=url,
                redis_url=redis_url or "redis://fakeredis/0",
                redis_namespace=namespace,
                shards=SHARDS,
                lease_ttl_seconds=2.0,
                sweep_interval_seconds=0.5,
                sweep_grace_seconds=2.0,
                worker_threads=2,
                log_level="WARNING",
                # The in-memory Redis has no address for the API's own async client to reach: its
                # waiting holds are recorded by the API (a real Redis, --redis-url, hands them over).
                hand_over_seconds=Settings.model_fields["hand_over_seconds"].default if redis_url else 0,
            )
            upgrade(url)
            say("  schema    migrated to head")
            engine = make_engine(url, pool_size=4, max_overflow=16)
            stack.callback(engine.dispose)
            _require_empty(engine)
            _start_system(stack, settings, redis, engine, say)
            client = stack.enter_context(StockClient(settings, engine=engine, redis_client=redis))
            tell_story(client, engine, say)
            if listening is not None:
                _serve(settings, engine, redis, listening, say)
    except TesseraError as failure:  # DemoFailed, or a ticket that timed out
        say(f"demo FAILED: {failure}")
        return 1
    except KeyboardInterrupt:
        say(f"\ndemo interrupted after {since(started)}" + _cleaned(database_url, redis_url))
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    say(f"\ndemo finished in {since(started)}" + _cleaned(database_url, redis_url))
    return 0


def _cleaned(database_url: str | None, redis_url: str | None) -> str:
    """What the demo took down on its way out, as the end of its last line."""
    cleaned = [
        *([] if database_url else ["embedded PostgreSQL stopped and its temporary directory removed"]),
        *([] if redis_url else ["in-memory Redis dropped"]),
    ]
    return f": {', '.join(cleaned)}" if cleaned else ""


def _start_system(
    stack: contextlib.ExitStack, settings: Settings, redis: Redis, engine: Engine, say: Callable[[str], None]
) -> None:
    worker = WorkerProcess(
        settings, range(settings.shards), name="demo-worker", redis_client=redis, engine=engine
    )
    worker.start()
    stack.callback(worker.stop)
    epochs = ", ".join(f"{shard}:{lease.epoch}" for shard, lease in sorted(worker.held.items()))
    say(f"  worker    demo-worker leases shards 0-{settings.shards - 1} (shard:epoch {epochs})")
    stop = threading.Event()
    doorbells = Doorbells.of(redis, settings)
    sweeper = threading.Thread(
        target=run_sweeper,
        args=(engine, doorbells),
        kwargs={
            "interval": settings.sweep_interval_seconds,
            "grace_seconds": settings.sweep_grace_seconds,
            "stop": stop,
        },
        name="sweeper",
        daemon=True,
    )
    sweeper.start()
    stack.callback(sweeper.join, 5)
    stack.callback(stop.set)
    say(
        f"  sweeper   every {settings.sweep_interval_seconds:g} s rings shards with due expiries or with "
        f"commands waiting over {settings.sweep_grace_seconds:g} s"
    )


def _bind(host: str, port: int) -> socket.socket:
    """The socket the API will listen on, bound now (uvicorn listens on it once the story is told)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise DemoFailed(f"cannot serve on {host}:{port}: {error.strerror} (another port: --port)") from None
    return sock


def _serve(
    settings: Settings, engine: Engine, redis: Redis, listening: socket.socket, say: Callable[[str], None]
) -> None:
    """The API and the dashboard on the demo's system, until Ctrl-C or SIGTERM (then the caller
    stops everything)."""
    import uvicorn

    from db.tokens import create_token
    from producers.http.app import create_app

    with engine.begin() as conn:
        _, token = create_token(conn, "ops", "demo")
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine=engine, redis_client=redis), log_level="warning")
    )
    host, port = listening.getsockname()[:2]
    origin = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    say(
        f"\nserving the API and the dashboard until Ctrl-C:\n"
        f"  dashboard {origin}/dashboard#token={token}\n"
        f"  API docs  {origin}/docs\n"
        f"  metrics   {origin}/metrics\n"
        f"  ops token {token}"
    )
    # uvicorn stops gracefully on SIGINT / SIGTERM and then raises the signal again for whoever
    # handled it before: an interrupt either way (see run_demo), which ends serving here.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[listening])
    if not server.started:
        raise DemoFailed("the API did not start (its error is above)")
    say("stopped serving")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def _require_empty(engine: Engine) -> None:
    with engine.connect() as conn:
        if conn.execute(text("SELECT count(*) FROM products")).scalar():
            raise DemoFailed("the database already holds products: run the demo against an empty database")


def _delete_namespace(redis: Redis, namespace: str) -> None:
    keys = list(redis.scan_iter(f"{namespace}:*", count=1000))
    if keys:
        redis.delete(*keys)

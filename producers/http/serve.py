"""`tessera api`: uvicorn serving the app, in one process or in several.

With `--workers N` each process listens on a socket of its own, all bound to the one port with
SO_REUSEPORT, so the kernel spreads new connections over them evenly. With one socket shared by
the processes (uvicorn's own `--workers`), the process that wakes first accepts every connection
waiting: a load of 32 connections was seen split 9 / 23, and the busier process then held the
throughput down (measured: 1,300 holds/s for a 9 / 23 split, 1,640 for 14 / 18).
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import socket
import threading
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import structlog
import uvicorn

APP = "producers.http.app:app_factory"
RESPAWN_CHECK_SECONDS = 0.5
STOP_SECONDS = 30.0
log = structlog.get_logger("tessera.api")


def serve(host: str, port: int, workers: int, log_level: str, app: str = APP) -> None:
    """Serve `app` (an app factory's import path: Tessera's by default) until SIGINT or SIGTERM;
    a server process that dies is started again."""
    if workers <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(app, host=host, port=port, workers=workers, **_options(log_level))
        return
    # Bound here, never listened on: a port already taken is refused now, with the error, not by
    # each server process in turn.
    reserved = listening_socket(host, port, listen=False)
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def start() -> BaseProcess:
        process = context.Process(
            target=serve_one, args=(host, port, log_level, app), name="tessera-api", daemon=False
        )
        process.start()
        return process

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stopping)
    processes = [start() for _ in range(workers)]
    log.info("api.started", host=host, port=port, workers=workers, pids=[p.pid for p in processes])
    while not stop.wait(RESPAWN_CHECK_SECONDS):
        for i, process in enumerate(processes):
            if not process.is_alive():
                log.warning("api.worker_died", pid=process.pid, exitcode=process.exitcode)
                processes[i] = start()
    for process in processes:
        process.terminate()  # SIGTERM: uvicorn finishes the requests under way
    for process in processes:
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
    reserved.close()


def serve_one(host: str, port: int, log_level: str, app: str) -> None:
    """One server process (serving the app factory `app`), on its own socket."""
    config = uvicorn.Config(app, host=host, port=port, **_options(log_level))
    uvicorn.Server(config).run(sockets=[listening_socket(host, port, listen=True)])


def _options(log_level: str) -> dict[str, Any]:
    """What every server process runs with, in one process or in several."""
    return {
        "factory": True,
        "log_level": log_level.lower(),
        "access_log": False,
        "proxy_headers": False,  # served directly; behind a proxy, its headers are its own to set
    }


def listening_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT (listening, if asked)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> None:
    """`python -m producers.http.serve FACTORY --port N --workers N`: another app on this server
    stack (the benchmarks serve the seed's design so, to compare like with like)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("app", help="import path of an app factory, module:callable")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.workers, args.log_level, args.app)


if __name__ == "__main__":
    main()

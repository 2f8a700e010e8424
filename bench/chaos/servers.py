"""The soak's own servers: a PostgreSQL from pgserver's binaries and a redis-server, each on a free
port of 127.0.0.1. The soak faults them, so it never uses the shared ones."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

import httpx
import psycopg
from redis import Redis

from bench.chaos.clock import POLL_SECONDS
from bench.common import _die_with_parent, terminate

with warnings.catch_warnings():  # pgserver's import warns about XDG_RUNTIME_DIR, which it does not need here
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_up(url: str, path: str = "/healthz", timeout: float = 30.0) -> None:
    """Block until an HTTP server just started answers `path` with 200; RuntimeError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} did not answer 200 within {timeout} s")


class OwnPostgres:
    """A PostgreSQL cluster in `workdir/pgdata`, on 127.0.0.1:`port`, run by pg_ctl.

    As root, initdb and pg_ctl run as the system user 'pgserver' (created if missing), as the
    pgserver package does; otherwise as the current user.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pgdata = workdir / "pgdata"
        self.logfile = workdir / "pglog" / "postgres.log"
        self.port = free_port()
        self.user = "pgserver" if os.geteuid() == 0 else None
        self.started = False

    def url(self, database: str = "tessera") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        # Output to a file, never a pipe: the postmaster pg_ctl starts would inherit the pipe and
        # keep it open, and reading it would never end.
        with open(self.workdir / "pg_ctl.out", "ab") as out:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / tool), "-D", str(self.pgdata), *args],
                user=self.user,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=True,
            )

    def _prepare(self) -> None:
        self.pgdata.mkdir()
        self.logfile.parent.mkdir()
        if self.user is None:
            return
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(self.user)
        assert entry is not None
        # What pgserver does before it runs initdb as that user: every folder above the binaries and
        # the data traversable (a fresh machine's /root is 0700), the binaries readable and runnable.
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_prefix_permissions(self.pgdata)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        self.workdir.chmod(0o755)
        for path in (self.pgdata, self.logfile.parent):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _options(self) -> list[str]:
        server = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c max_connections=300"
        return ["-w", "-t", "60", "-l", str(self.logfile), "-o", server]

    def start(self) -> None:
        self._prepare()
        self._run("initdb", "--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres", "-N")
        self._run("pg_ctl", *self._options(), "start")
        self.started = True
        with psycopg.connect(self.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("CREATE DATABASE tessera")

    def restart(self) -> None:
        self._run("pg_ctl", *self._options(), "-m", "fast", "restart")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self.url().replace("+psycopg", ""), connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for mode in ("fast", "immediate"):
            with contextlib.suppress(subprocess.SubprocessError):
                self._run("pg_ctl", "-w", "-t", "30", "-m", mode, "stop")
                return


class OwnRedis:
    """A redis-server on 127.0.0.1:`port` with no persistence, a child of this process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(Exception):
                if client.ping():
                    break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start; see {self.workdir / 'redis.log'}")
            time.sleep(POLL_SECONDS)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            terminate([self.proc], timeout=10)

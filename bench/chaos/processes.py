"""The worker and scheduler processes the soak runs and faults, and the shard leases they hold."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis import Redis

from bench.chaos.clock import POLL_SECONDS, DbClock
from bench.chaos.journal import say
from bench.common import start_cli, terminate
from tessera.settings import Settings

WORKERS = ("w1", "w2")
"""The standing workers, both on every shard: the leases decide which one applies."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Fleet:
    """The worker and scheduler processes, by role (w1, w2, w3, scheduler).

    A role is 'expected' while it should be running; `watch()` restarts an expected process that
    exited on its own and records that exit. Every process is started from the main thread: the
    children get SIGTERM when the thread that started them ends (PR_SET_PDEATHSIG).
    """

    def __init__(self, env: dict[str, str], log_dir: Path, clock: DbClock) -> None:
        self.env = env
        self.log_dir = log_dir
        self.clock = clock
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, Path] = {}
        self.expected: set[str] = set()
        self.exits: list[dict[str, Any]] = []
        self._starts = itertools.count()

    def start(self, role: str) -> subprocess.Popen[bytes]:
        args = ["scheduler"] if role == "scheduler" else ["worker", "--name", role]
        path = self.log_dir / f"{role}-{next(self._starts)}.log"
        proc = start_cli(args, self.env, path)
        self.procs[role] = proc
        self.logs[proc.pid] = path
        self.expected.add(role)
        return proc

    def take_down(self, role: str) -> subprocess.Popen[bytes]:
        """The role's process, no longer restarted by `watch()` (the caller faults it)."""
        self.expected.discard(role)
        return self.procs[role]

    def watch(self) -> None:
        for role in sorted(self.expected):
            proc = self.procs[role]
            if proc.poll() is None:
                continue
            log = self.logs[proc.pid]
            self.exits.append(
                {
                    "role": role,
                    "pid": proc.pid,
                    "returncode": proc.returncode,
                    "at": self.clock.now(),
                    "log": str(log),
                    "log_tail": _tail(log),
                }
            )
            say(f"  !! {role} (pid {proc.pid}) exited on its own with {proc.returncode}; restarting it")
            self.start(role)

    def stop_all(self) -> None:
        self.expected.clear()
        for proc in self.procs.values():
            proc.send_signal(signal.SIGCONT)  # a stopped process handles no SIGTERM
        terminate(self.procs.values(), timeout=20)


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T for stopped, Z, …)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class Leases:
    """Who holds each shard's lease, read from Redis (None where the lease is free or unreadable)."""

    def __init__(self, redis_client: Redis, settings: Settings) -> None:
        self.redis = redis_client
        self.keys = [f"{settings.redis_namespace}:lease:{s}" for s in range(settings.shards)]

    def holders(self) -> list[str | None]:
        try:
            values = self.redis.mget(self.keys)
        except Exception:
            return [None] * len(self.keys)
        return [v.decode().split("|")[0] if isinstance(v, bytes) else None for v in values]

    def count(self) -> Counter[str]:
        return Counter(h for h in self.holders() if h)

    def busiest(self, candidates: Sequence[str]) -> str:
        counts = self.count()
        return max(candidates, key=lambda role: (counts[role], role == candidates[0]))

    def wait_all_held(self, fleet: Fleet, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.holders()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers took no leases within {timeout}s; logs in {fleet.log_dir}")
            fleet.watch()
            time.sleep(POLL_SECONDS)

"""Sampling a worker process with py-spy while a bench runs, and summing up where its time went.

py-spy (the `bench` extra) samples only the thread holding the GIL (``--gil``): the process's
Python CPU, not its threads waiting on PostgreSQL or Redis. ``--nonblocking`` reads the stacks
without pausing the process, so the bench's figures stay those of an unprofiled run.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LINE_NUMBER = re.compile(r":\d+\)$")
# Frames every thread's stack starts with: everything is "under" them, which says nothing.
PLUMBING = re.compile(r"\((threading\.py|concurrent/futures/.*|<frozen runpy>)\)$")


@contextlib.contextmanager
def sampled(pid: int, out: Path, *, rate: int = 1000) -> Iterator[None]:
    """Record `pid` while the block runs; collapsed stacks ("frame;frame;… count") go to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            *("py-spy", "record", "--gil", "--nonblocking", "--rate", str(rate)),
            *("--format", "raw", "--output", str(out), "--pid", str(pid)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert spy.stdout is not None
    started = spy.stdout.readline()  # "py-spy> Sampling process …": attached, samples are being taken
    if "Sampling" not in started:
        spy.wait(timeout=10)
        raise RuntimeError(f"py-spy could not sample process {pid}: {started.strip()}")
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.communicate(timeout=60)


def summarise(collapsed: str, top: int = 12) -> dict[str, Any]:
    """Share of the samples per function (line numbers dropped): in it (self) and under it (total,
    leaving out the thread plumbing every stack starts with)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            if not PLUMBING.search(frame):
                under[frame] += n

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": frame, "percent": round(100 * n / samples, 1)}
            for frame, n in counter.most_common(top)
        ]

    return {
        "samples": samples,
        "self": shares(own) if samples else [],
        "total": shares(under) if samples else [],
    }

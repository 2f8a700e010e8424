"""Stopping a long-running command the way an operator does: SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import threading


def stop_on_termination(stop: threading.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT (call from the main thread), so the command ends cleanly."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

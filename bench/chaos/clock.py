"""The database's clock, on which the soak states every moment, and the soak's polling interval."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

POLL_SECONDS = 0.05


class DbClock:
    """PostgreSQL's clock, read once (the sample with the shortest round trip of five) and then
    followed on this machine's: database time = time.time() + offset, in epoch seconds."""

    def __init__(self, engine: Engine) -> None:
        samples = []
        with engine.connect() as conn:
            for _ in range(5):
                before = time.time()
                db = float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
                after = time.time()
                samples.append((after - before, db - (before + after) / 2))
        _, self.offset = min(samples)

    def now(self) -> float:
        return time.time() + self.offset

    def local(self, db_epoch: float) -> float:
        """The time.time() value at which the database's clock shows `db_epoch`."""
        return db_epoch - self.offset

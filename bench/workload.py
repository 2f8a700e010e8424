"""A tile catalogue and a mixed checkout / payment workload over it, shared by catalog and latency."""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from sqlalchemy import text

from bench.common import BenchEnv
from ops.progress import tracked

WAREHOUSE = "BUC1"


def sku_of(i: int) -> str:
    return f"TILE-{i:05d}"


class Popularity:
    """Draws product indexes 0..n-1: uniformly, or Zipf(s) by rank (index 0 is the most popular)."""

    def __init__(self, n: int, distribution: str, s: float = 1.1) -> None:
        if distribution not in ("uniform", "zipf"):
            raise ValueError(f"unknown distribution {distribution!r}")
        self.n = n
        self.distribution = distribution
        self.s = s
        weights = [1.0] * n if distribution == "uniform" else [1.0 / (k**s) for k in range(1, n + 1)]
        self.cum_weights = list(itertools.accumulate(weights))
        self.top_share = weights[0] / self.cum_weights[-1]

    def draw(self, rng: random.Random, k: int) -> list[int]:
        """k distinct product indexes."""
        chosen: list[int] = []
        while len(chosen) < k:
            (i,) = rng.choices(range(self.n), cum_weights=self.cum_weights)
            if i not in chosen:
                chosen.append(i)
        return chosen


def seed_catalogue(env: BenchEnv, products: int, stock_pieces: int, threads: int = 8) -> None:
    """Warehouses, `products` tiles (via the client) and `stock_pieces` of each received in one lot.

    Workers must be running: receipts are commands applied by the shard writers.
    """
    env.seed_warehouses()
    client = env.client
    for i in tracked(range(products), "products"):
        client.upsert_product(sku=sku_of(i), name=f"Tile {i}", pieces_per_box=4, sqm_per_box="1.44")

    def receive(i: int) -> None:
        client.receive(
            idempotency_key=f"rcv-{i}",
            warehouse=WAREHOUSE,
            sku=sku_of(i),
            quantity=str(stock_pieces),
            unit="piece",
            lot="L1",
            shade="A",
            caliber="9",
        )

    with ThreadPoolExecutor(threads) as pool:
        list(tracked(pool.map(receive, range(products)), "receipts", total=products))
    if not env.wait_drained(120):
        raise RuntimeError("stock receipts were not applied within 120 s")


class Sent(NamedTuple):
    """One command a producer sent: its kind, its key and (holds) the hold id.

    A tuple of strings: the collector stops tracking it, so thousands kept by a run cost the
    generator's full collections nothing (those stop every producer thread at once)."""

    kind: str  # "hold", "pay" or "release"
    key: str
    hold_id: str


class Mix:
    """The command mix: new holds of 1-3 lines; payments and releases of earlier holds.

    Parameters:
      popularity: which products the hold lines ask for.
      pay_share / release_share: of all commands, the shares that settle an earlier hold (the rest
        are new holds; when no earlier hold is available, a new hold is sent instead).
      settle_after: a hold becomes available to pay or release this many seconds after it was sent
        (monotonic clock), so that it is usually decided by then.
    """

    def __init__(
        self,
        popularity: Popularity,
        *,
        pay_share: float = 0.25,
        release_share: float = 0.15,
        settle_after: float = 1.0,
        max_lines: int = 3,
        max_pieces: int = 4,
    ) -> None:
        self.popularity = popularity
        self.pay_share = pay_share
        self.release_share = release_share
        self.settle_after = settle_after
        self.max_lines = max_lines
        self.max_pieces = max_pieces
        self._open: deque[tuple[float, str]] = deque()
        self._lock = threading.Lock()

    def hold_lines(self, rng: random.Random) -> list[dict[str, Any]]:
        count = rng.randint(1, self.max_lines)
        return [
            {"sku": sku_of(i), "quantity": str(rng.randint(1, self.max_pieces)), "unit": "piece"}
            for i in self.popularity.draw(rng, count)
        ]

    def remember(self, hold_id: str, now: float) -> None:
        with self._lock:
            self._open.append((now, hold_id))

    def take_settleable(self, now: float) -> str | None:
        with self._lock:
            if self._open and self._open[0][0] <= now - self.settle_after:
                return self._open.popleft()[1]
        return None

    def choose(self, rng: random.Random, now: float) -> tuple[str, str | None]:
        """("hold", None) or ("pay" | "release", hold_id)."""
        roll = rng.random()
        if roll < self.pay_share + self.release_share:
            hold_id = self.take_settleable(now)
            if hold_id is not None:
                return ("pay" if roll < self.pay_share else "release"), hold_id
        return "hold", None

    def send(
        self,
        env: BenchEnv,
        rng: random.Random,
        now: float,
        *,
        wait: float | None = None,
        on_sent: Callable[[Sent], None],
    ) -> Sent:
        """Send one command of the mix; with `wait`, also wait up to that long for its answer."""
        kind, hold_id = self.choose(rng, now)
        client = env.client
        token = uuid.uuid4().hex
        if kind == "hold":
            key = f"cart-{token}"
            ticket = client.reserve(idempotency_key=key, lines=self.hold_lines(rng), ttl_seconds=900)
            sent = Sent("hold", key, ticket.hold_id)
            on_sent(sent)
            if wait is not None:
                result = ticket.wait(timeout=wait)
                if result.status == "reserved":
                    self.remember(ticket.hold_id, now)
            else:
                self.remember(ticket.hold_id, now)
            return sent
        assert hold_id is not None
        if kind == "pay":
            command = client.confirm_payment(event_id=f"evt-{token}", hold_id=hold_id, status="paid")
        else:
            command = client.release(hold_id, idempotency_key=f"rel-{token}")
        sent = Sent(kind, command.key, hold_id)
        on_sent(sent)
        if wait is not None:
            command.wait(timeout=wait)
        return sent


KIND_GROUPS = {
    "line.reserve": "hold lines",
    "hold.pay": "payments",
    "hold.release": "releases",
}


def applied_between(env: BenchEnv, start: Any, end: Any) -> dict[str, Any]:
    """Commands the writers applied in [start, end] (DB clock): count per kind, latency, per shard.

    Latency is enqueue → applied: ``applied_at - recorded_at``. Producer-sent commands are
    line.reserve (a hold's line), hold.pay and hold.release; the rest are the writers' follow-ups
    (line.confirm, line.release, ...).
    """
    with env.engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT kind, shard, extract(epoch FROM applied_at - recorded_at)
                FROM commands WHERE applied_at BETWEEN :start AND :end
                """
            ),
            {"start": start, "end": end},
        ).all()
    per_kind: dict[str, int] = {}
    per_shard: dict[int, int] = {}
    latencies: dict[str, list[float]] = {"all": [], "producer_sent": []}
    for kind, shard, seconds in rows:
        per_kind[kind] = per_kind.get(kind, 0) + 1
        per_shard[shard] = per_shard.get(shard, 0) + 1
        latencies["all"].append(float(seconds))
        if kind in KIND_GROUPS:
            latencies["producer_sent"].append(float(seconds))
            latencies.setdefault(kind, []).append(float(seconds))
    return {"count": len(rows), "per_kind": per_kind, "per_shard": per_shard, "latencies_s": latencies}

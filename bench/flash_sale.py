"""Flash sale: one hot product, many concurrent checkouts; Tessera against the seed's design.

Tessera: `--producers` threads each call ``StockClient.reserve(...)`` for one piece of the hot
product and wait for the answer (``HoldTicket.wait``), a fixed number of holds in all. The writer
of the product's shard (one worker process by default) applies them in batches.

Seed: the design Tessera replaces, in Python / psycopg 3 with as many threads: one transaction per
request — ``SELECT … FOR UPDATE`` on the product's inventory row, insert the reservation, update
``reserved``, insert the movement — on its own tables in the same database.

holds/s = decided holds / wall time from the first send to the last answer (closed loop: each
producer sends its next hold when it has the answer to the previous one).

Then, for Tessera only, a backlog run: holds recorded while no worker runs, then one worker started;
how fast the writer applies them with full batches (its capacity when not latency-bound).
Last, a limited-stock run for both (100 pieces, 300 holds of 3 pieces): exactly 33 holds must be
reserved, no piece oversold, and Tessera's ledger must reconcile.

    python -m bench.flash_sale                       # 6,000 holds, 32 producers
    python -m bench.flash_sale --holds 200 --producers 8 --limited-holds 30 --backlog 200   # smoke
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text

from bench.common import (
    BenchEnv,
    CpuMeter,
    add_fleet_flags,
    base_parser,
    check_threads,
    fleet_overrides,
    fmt,
    machine_facts,
    print_table,
    summary_ms,
    write_results,
)
from bench.profile import sampled, summarise
from db.reconcile import reconcile
from domain.errors import ResultTimeout
from ops.progress import tracked

NAME = "flash_sale"
HOT_SKU = "FLASH-HOT-60x60"
BACKLOG_SKU = "FLASH-BACKLOG-60x60"
LIMITED_SKU = "FLASH-LIMITED-60x60"
WARMUP_SKU = "FLASH-WARMUP"
PROFILE_SKU = "FLASH-PROFILE-60x60"
TTL_SECONDS = 900

SEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS seed_inventory (
    product_id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    on_hand numeric(18, 3) NOT NULL DEFAULT 0,
    reserved numeric(18, 3) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS seed_reservations (
    id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    product_id int NOT NULL REFERENCES seed_inventory (product_id),
    quantity numeric(18, 3) NOT NULL,
    status text NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS seed_movements (
    id bigserial PRIMARY KEY,
    product_id int NOT NULL REFERENCES seed_inventory (product_id),
    reservation_id bigint NOT NULL REFERENCES seed_reservations (id),
    kind text NOT NULL,
    d_reserved numeric(18, 3) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

Outcome = tuple[str, float | None, str | None]
"""What one request returns: its outcome and, for Tessera, the perf_counter time its ticket came back
and the hold's id."""


@dataclass
class RunResult:
    """One timed run: per-hold send / ticket / answer times (perf_counter) and outcomes."""

    holds: int
    sends: list[float] = field(default_factory=list)
    tickets: list[float] = field(default_factory=list)
    hold_ids: list[str] = field(default_factory=list)
    wall_offset: float = 0.0
    """time.time() − time.perf_counter() at the start: puts the times above on the database's clock."""
    phases: dict[str, Any] = field(default_factory=dict)
    answers: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)
    batches: dict[str, Any] = field(default_factory=dict)

    @property
    def decided(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome not in ("timeout", "error"))

    @property
    def wall_s(self) -> float:
        return (max(self.answers) - min(self.sends)) if self.answers else 0.0

    @property
    def holds_per_s(self) -> float:
        return self.decided / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self) -> dict[str, Any]:
        return summary_ms([a - s for s, a in zip(self.sends, self.answers, strict=True)])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "holds": self.holds,
            "decided": self.decided,
            "outcomes": dict(sorted(self.outcomes.items())),
            "wall_s": round(self.wall_s, 3),
            "holds_per_s": round(self.holds_per_s, 1),
            "latency": self.latency(),
            "errors": self.errors[:5],
            "cpu": self.cpu,
        }
        if self.tickets:
            # send → ticket (recorded durably) and ticket → answer (applied and read back)
            out["record_latency"] = summary_ms([t - s for s, t in zip(self.sends, self.tickets, strict=True)])
            out["answer_latency"] = summary_ms(
                [a - t for t, a in zip(self.tickets, self.answers, strict=True)]
            )
        if self.batches:
            out["writer_batches"] = self.batches
        if self.phases:
            out["phases"] = self.phases
        return out


def metered(env: BenchEnv, run: Callable[[], RunResult], *, batches: bool) -> RunResult:
    """Run with CPU accounting per component (and, for Tessera, the writer's batch figures)."""
    before = env.last_batch_id()
    with CpuMeter(p.pid for p in env.procs) as meter:
        result = run()
    result.cpu = meter.report()
    if batches:
        result.batches = env.batch_stats(before)
    return result


def run_threads(
    holds: int,
    producers: int,
    one_hold: Callable[[int, Any], Outcome],
    make_state: Callable[[], Any],
    max_seconds: float,
) -> RunResult:
    """`producers` threads take hold numbers 0..holds-1 in turn; `one_hold(k, state)` → outcome.

    Bounded: no thread starts a new hold after `max_seconds`.
    """
    result = RunResult(holds, wall_offset=time.time() - time.perf_counter())
    lock = threading.Lock()
    next_k = iter(range(holds))
    start = threading.Barrier(producers + 1)
    deadline = [0.0]

    def producer() -> None:
        try:
            state = make_state()
        except Exception as error:
            with lock:
                result.errors.append(f"setup: {error!r}")
            start.wait()
            return
        start.wait()
        try:
            while True:
                with lock:
                    k = next(next_k, None)
                if k is None or time.monotonic() > deadline[0]:
                    return
                _timed_hold(result, lock, one_hold, k, state)
        finally:
            close = getattr(state, "close", None)
            if close:
                close()

    threads = [threading.Thread(target=producer, name=f"producer-{i}", daemon=True) for i in range(producers)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + max_seconds
    start.wait()
    for t in threads:
        t.join()
    if len(result.tickets) != len(result.sends) or len(result.hold_ids) not in (0, len(result.sends)):
        result.tickets, result.hold_ids = [], []  # some requests failed before their ticket: no phase split
    return result


def _timed_hold(
    result: RunResult, lock: threading.Lock, one_hold: Callable[[int, Any], Outcome], k: int, state: Any
) -> None:
    """Place hold `k`, timing it from send to answer, and count its outcome."""
    sent = time.perf_counter()
    ticket: float | None = None
    hold_id: str | None = None
    try:
        outcome, ticket, hold_id = one_hold(k, state)
    except ResultTimeout:
        outcome = "timeout"
    except Exception as error:
        outcome = "error"
        with lock:
            result.errors.append(repr(error))
    answered = time.perf_counter()
    with lock:
        result.sends.append(sent)
        result.answers.append(answered)
        if ticket is not None:
            result.tickets.append(ticket)
        if hold_id is not None:
            result.hold_ids.append(hold_id)
        result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1


# -- Tessera -----------------------------------------------------------------------------------


def tessera_run(
    env: BenchEnv,
    *,
    sku: str,
    holds: int,
    pieces: int,
    producers: int,
    timeout: float,
    max_seconds: float,
    tag: str,
    wait: bool = True,
) -> RunResult:
    client = env.client
    line = [{"sku": sku, "quantity": str(pieces), "unit": "piece"}]

    def one_hold(k: int, _state: Any) -> Outcome:
        ticket = client.reserve(idempotency_key=f"{tag}-{k}", lines=line, ttl_seconds=TTL_SECONDS)
        recorded = time.perf_counter()
        if not wait:
            return "recorded", recorded, ticket.hold_id
        return str(ticket.wait(timeout=timeout).status), recorded, ticket.hold_id

    return run_threads(holds, producers, one_hold, lambda: None, max_seconds)


# Each hold's times on the database's side: its recording (the recorder's transaction began), the
# claim of the batch that decided its line (the fence's clock) and its line command applied.
_HOLD_TIMES = """
    SELECT extract(epoch FROM h.created_at), extract(epoch FROM b.started_at), extract(epoch FROM c.applied_at)
    FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS k(id, n)
    JOIN holds h ON h.id = k.id
    JOIN commands c ON c.idempotency_key = 'line.reserve:' || h.id || ':' || 1  -- its one line
    JOIN apply_batches b ON b.id = c.batch_id
    ORDER BY k.n
"""


def tessera_phases(env: BenchEnv, run: RunResult) -> dict[str, Any]:
    """Where each hold's time went, from its send to its answer (one-line holds): waiting for the
    recorder (the group before it being written), recording (its group's statement, the nudge, the
    ticket back to its thread), until the claim of the batch that decided it (negative: that claim
    began before the ticket reached its thread), that batch until its line was applied, then the
    commit and the answer's way back."""
    if not run.tickets or len(run.hold_ids) != len(run.sends):
        return {}
    with env.engine.connect() as conn:
        rows = conn.execute(text(_HOLD_TIMES), {"ids": run.hold_ids}).all()
    if len(rows) != len(run.sends):
        return {}
    phases: dict[str, list[float]] = {
        "waiting_for_the_recorder": [],
        "recording": [],
        "ticket_to_claim": [],
        "claim_to_applied": [],
        "applied_to_answer": [],
    }
    offset = run.wall_offset
    for (recorded, claimed, applied), sent, ticket, answered in zip(
        rows, run.sends, run.tickets, run.answers, strict=True
    ):
        marks = [
            sent + offset,
            float(recorded),
            ticket + offset,
            float(claimed),
            float(applied),
            answered + offset,
        ]
        for name, start, end in zip(phases, marks, marks[1:], strict=False):
            phases[name].append(end - start)
    return {name: summary_ms(values) for name, values in phases.items()}


def tessera_stock(env: BenchEnv, sku: str, pieces: int, key: str) -> None:
    env.client.upsert_product(sku=sku, name=f"Flash sale tile {sku}", pieces_per_box=4, sqm_per_box="1.44")
    result = env.client.receive(
        idempotency_key=key,
        warehouse="BUC1",
        sku=sku,
        quantity=str(pieces),
        unit="piece",
        lot="L1",
        shade="A",
        caliber="9",
    ).wait(timeout=60)
    assert result["outcome"] == "received", result


def tessera_balance(env: BenchEnv, sku: str) -> tuple[Decimal, Decimal]:
    with env.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT coalesce(sum(b.on_hand), 0), coalesce(sum(b.reserved), 0) FROM stock_balances b "
                "JOIN products p ON p.id = b.product_id WHERE p.sku = :sku"
            ),
            {"sku": sku},
        ).one()
    return Decimal(row[0]), Decimal(row[1])


def tessera_reserved_holds(env: BenchEnv, sku: str) -> int:
    with env.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(DISTINCT h.id) FROM holds h JOIN hold_lines l ON l.hold_id = h.id "
                    "JOIN products p ON p.id = l.product_id WHERE p.sku = :sku AND h.status = 'reserved'"
                ),
                {"sku": sku},
            ).scalar_one()
        )


def tessera_backlog(
    env: BenchEnv, *, holds: int, producers: int, workers: int, max_seconds: float
) -> dict[str, Any]:
    """Record `holds` holds with no worker running, then start the workers and time the drain."""
    env.stop_processes()
    recorded = tessera_run(
        env,
        sku=BACKLOG_SKU,
        holds=holds,
        pieces=1,
        producers=producers,
        timeout=0,
        max_seconds=max_seconds,
        tag="backlog",
        wait=False,
    )
    before = env.last_batch_id()
    started = time.monotonic()
    env.start_workers(workers)
    drained = env.wait_drained(max_seconds)
    wall = time.monotonic() - started
    with env.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at)), coalesce(sum(commands), 0) "
                "FROM apply_batches WHERE id > :before"
            ),
            {"before": before},
        ).one()
    apply_s, applied = float(row[0] or 0), int(row[1])
    return {
        "holds": holds,
        "recorded": recorded.outcomes.get("recorded", 0),
        "record_wall_s": round(recorded.wall_s, 3),
        "record_holds_per_s": round(recorded.holds_per_s, 1),
        "drained": drained,
        "applied_commands": applied,
        "apply_s": round(apply_s, 3),
        "apply_holds_per_s": round(applied / apply_s, 1) if apply_s > 0 else None,
        "start_to_drained_s": round(wall, 3),
        "writer_batches": env.batch_stats(before),
    }


# -- the seed's design -------------------------------------------------------------------------


def seed_dsn(env: BenchEnv) -> str:
    return env.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def seed_setup(env: BenchEnv) -> None:
    with psycopg.connect(seed_dsn(env), autocommit=True) as conn:
        conn.execute(SEED_SCHEMA)


def seed_stock(env: BenchEnv, sku: str, pieces: int) -> None:
    with psycopg.connect(seed_dsn(env)) as conn:
        conn.execute(
            "INSERT INTO seed_inventory (sku, on_hand) VALUES (%s, %s) "
            "ON CONFLICT (sku) DO UPDATE SET on_hand = seed_inventory.on_hand + EXCLUDED.on_hand",
            (sku, Decimal(pieces)),
        )


def seed_reserve(
    conn: psycopg.Connection[Any], key: str, sku: str, quantity: Decimal, ttl_seconds: int
) -> str:
    """The seed's reservation: one transaction, the inventory row locked FOR UPDATE."""
    with conn.transaction():
        row = conn.execute(
            "SELECT product_id, on_hand, reserved FROM seed_inventory WHERE sku = %s FOR UPDATE", (sku,)
        ).fetchone()
        if row is None:
            raise LookupError(sku)
        product_id, on_hand, reserved = row
        status = "reserved" if on_hand - reserved >= quantity else "rejected"
        reservation = conn.execute(
            "INSERT INTO seed_reservations (idempotency_key, product_id, quantity, status, expires_at) "
            "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) RETURNING id",
            (key, product_id, quantity, status, ttl_seconds),
        ).fetchone()
        assert reservation is not None
        if status == "reserved":
            conn.execute(
                "UPDATE seed_inventory SET reserved = reserved + %s, updated_at = now() WHERE product_id = %s",
                (quantity, product_id),
            )
            conn.execute(
                "INSERT INTO seed_movements (product_id, reservation_id, kind, d_reserved) "
                "VALUES (%s, %s, 'reservation', %s)",
                (product_id, reservation[0], quantity),
            )
    return status


def seed_run(
    env: BenchEnv, *, sku: str, holds: int, pieces: int, producers: int, max_seconds: float, tag: str
) -> RunResult:
    dsn = seed_dsn(env)
    quantity = Decimal(pieces)

    def one_hold(k: int, conn: psycopg.Connection[Any]) -> Outcome:
        return seed_reserve(conn, f"{tag}-{k}", sku, quantity, TTL_SECONDS), None, None

    return run_threads(holds, producers, one_hold, lambda: psycopg.connect(dsn), max_seconds)


def seed_balance(env: BenchEnv, sku: str) -> tuple[Decimal, Decimal, int]:
    with psycopg.connect(seed_dsn(env)) as conn:
        row = conn.execute(
            "SELECT i.on_hand, i.reserved, (SELECT count(*) FROM seed_reservations r "
            " WHERE r.product_id = i.product_id AND r.status = 'reserved') FROM seed_inventory i WHERE sku = %s",
            (sku,),
        ).fetchone()
    assert row is not None
    return Decimal(row[0]), Decimal(row[1]), int(row[2])


# -- the bench ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(
        "Flash sale: one hot product, concurrent holds; Tessera vs the seed's FOR UPDATE design."
    )
    parser.add_argument("--holds", type=int, default=6000, help="holds per timed run (each system)")
    parser.add_argument("--producers", type=int, default=32, help="concurrent producer threads")
    add_fleet_flags(parser)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per system (alternating)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2000,
        help="untimed holds per system before timing (then VACUUM ANALYZE)",
    )
    parser.add_argument("--backlog", type=int, default=6000, help="holds in the backlog run (0: skip it)")
    parser.add_argument("--limited-stock", type=int, default=100, help="pieces in the limited-stock run")
    parser.add_argument("--limited-holds", type=int, default=300, help="holds in the limited-stock run")
    parser.add_argument(
        "--limited-pieces", type=int, default=3, help="pieces per hold in the limited-stock run"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a producer waits for one answer")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="bound on each timed run")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="after the timed runs, one more Tessera run with the worker sampled by py-spy (the `bench` "
        "extra): collapsed stacks to this file, the top functions in the results",
    )
    args = parser.parse_args(argv)
    check_threads(parser, args.producers, "--producers")
    return args


def main(argv: list[str] | None = None) -> int:
    """Stock both systems alike, warm them up, time them on one hot product in turn, then measure
    Tessera's writer on a backlog and both systems on limited stock; report and check."""
    args = parse_args(argv)
    with BenchEnv(NAME, args, pool_size=min(args.producers, 40) + 2, **fleet_overrides(args)) as env:
        facts = machine_facts(env.engine, env.redis)
        prepare(env, args)
        tessera_runs, seed_runs = timed_runs(env, args)
        profile = profile_run(env, args) if args.profile else None
        backlog = backlog_run(env, args) if args.backlog else None
        limited = limited_stock_run(env, args)
        results = assemble(env, args, facts, tessera_runs, seed_runs, profile, backlog, limited)
    report(args, facts, tessera_runs, seed_runs, results)
    write_results(NAME, args.results_dir, results)
    return failed(limited, backlog)


def _run_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"producers": args.producers, "max_seconds": args.max_seconds}


def prepare(env: BenchEnv, args: argparse.Namespace) -> None:
    """Warehouses, the seed's table, the workers, stock on both sides, and an untimed warm-up."""
    env.seed_warehouses()
    seed_setup(env)
    env.start_workers(args.workers)
    print(f"{args.workers} worker(s) hold their leases; database {env.db_name}", flush=True)
    tessera_stock(env, HOT_SKU, args.holds * args.repeats, "rcv-hot")
    tessera_stock(env, WARMUP_SKU, max(args.warmup, 1), "rcv-warmup")
    seed_stock(env, HOT_SKU, args.holds * args.repeats)
    seed_stock(env, WARMUP_SKU, max(args.warmup, 1))
    # Warm up connections, prepared statements and the writer, untimed.
    if args.warmup:
        opts = _run_opts(args)
        tessera_run(
            env, sku=WARMUP_SKU, holds=args.warmup, pieces=1, timeout=args.timeout, tag="warm", **opts
        )
        seed_run(env, sku=WARMUP_SKU, holds=args.warmup, pieces=1, tag="warm", **opts)
    env.settle()


def timed_runs(env: BenchEnv, args: argparse.Namespace) -> tuple[list[RunResult], list[RunResult]]:
    """`--repeats` timed runs of each system on the hot product, alternating."""
    tessera_runs: list[RunResult] = []
    seed_runs: list[RunResult] = []
    opts = _run_opts(args)
    for r in tracked(range(args.repeats), "flash sale runs"):
        tessera = partial(
            tessera_run,
            env,
            sku=HOT_SKU,
            holds=args.holds,
            pieces=1,
            timeout=args.timeout,
            tag=f"hot{r}",
            **opts,
        )
        tessera_runs.append(metered(env, tessera, batches=True))
        tessera_runs[-1].phases = tessera_phases(env, tessera_runs[-1])
        env.check_alive()
        seed = partial(seed_run, env, sku=HOT_SKU, holds=args.holds, pieces=1, tag=f"hot{r}", **opts)
        seed_runs.append(metered(env, seed, batches=False))
        print(
            f"run {r + 1}/{args.repeats}: tessera {tessera_runs[-1].holds_per_s:,.0f} holds/s, "
            f"seed {seed_runs[-1].holds_per_s:,.0f} holds/s",
            flush=True,
        )
    return tessera_runs, seed_runs


def profile_run(env: BenchEnv, args: argparse.Namespace) -> dict[str, Any]:
    """One more Tessera run with the worker sampled (not in the ratio: sampling takes some of the
    CPU the run would have had)."""
    tessera_stock(env, PROFILE_SKU, args.holds, "rcv-profile")
    with sampled(env.procs[0].pid, args.profile):
        profiled = tessera_run(
            env,
            sku=PROFILE_SKU,
            holds=args.holds,
            pieces=1,
            timeout=args.timeout,
            tag="prof",
            **_run_opts(args),
        )
    return {
        "file": str(args.profile),
        "holds_per_s": round(profiled.holds_per_s, 1),
        **summarise(args.profile.read_text()),
    }


def backlog_run(env: BenchEnv, args: argparse.Namespace) -> dict[str, Any]:
    tessera_stock(env, BACKLOG_SKU, args.backlog, "rcv-backlog")
    return tessera_backlog(
        env, holds=args.backlog, producers=args.producers, workers=args.workers, max_seconds=args.max_seconds
    )


def limited_stock_run(env: BenchEnv, args: argparse.Namespace) -> dict[str, Any]:
    """Limited stock: exactly min(holds, stock // pieces) holds reserved, never more."""
    expected = min(args.limited_holds, args.limited_stock // args.limited_pieces)
    tessera_stock(env, LIMITED_SKU, args.limited_stock, "rcv-limited")
    seed_stock(env, LIMITED_SKU, args.limited_stock)
    opts = {**_run_opts(args), "sku": LIMITED_SKU, "holds": args.limited_holds, "pieces": args.limited_pieces}
    lt = tessera_run(env, timeout=args.timeout, tag="ltd", **opts)
    ls = seed_run(env, tag="ltd", **opts)
    t_on_hand, t_reserved = tessera_balance(env, LIMITED_SKU)
    t_holds = tessera_reserved_holds(env, LIMITED_SKU)
    s_on_hand, s_reserved, s_holds = seed_balance(env, LIMITED_SKU)
    env.wait_drained(30)
    with env.engine.connect() as conn:
        differences = reconcile(conn)
    return {
        "stock": args.limited_stock,
        "holds": args.limited_holds,
        "pieces_per_hold": args.limited_pieces,
        "expected_reserved_holds": expected,
        "tessera_reserved": t_holds,
        "tessera_reserved_pieces": t_reserved,
        "tessera_outcomes": lt.outcomes,
        "seed_reserved": s_holds,
        "seed_reserved_pieces": s_reserved,
        "seed_outcomes": ls.outcomes,
        "oversell_tessera": max(Decimal(0), t_reserved - t_on_hand),
        "oversell_seed": max(Decimal(0), s_reserved - s_on_hand),
        "reconcile_clean": not differences,
        "reconcile_differences": [str(d) for d in differences[:20]],
    }


def assemble(
    env: BenchEnv,
    args: argparse.Namespace,
    facts: dict[str, Any],
    tessera_runs: list[RunResult],
    seed_runs: list[RunResult],
    profile: dict[str, Any] | None,
    backlog: dict[str, Any] | None,
    limited: dict[str, Any],
) -> dict[str, Any]:
    """The results file's document (its keys are compared across commits: keep them)."""
    tessera_holds_per_s = statistics.median(run.holds_per_s for run in tessera_runs)
    seed_holds_per_s = statistics.median(run.holds_per_s for run in seed_runs)
    ratio = tessera_holds_per_s / seed_holds_per_s if seed_holds_per_s else None
    return {
        "bench": NAME,
        "machine": facts,
        "parameters": {
            "holds": args.holds,
            "producers": args.producers,
            "workers": args.workers,
            "shards": env.settings.shards,
            "worker_threads": env.settings.worker_threads,
            "batch_max": env.settings.batch_max,
            "queue_prefetch": env.settings.queue_prefetch,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "backlog": args.backlog,
            "timeout_s": args.timeout,
            "log_level": args.log_level,
            "ttl_seconds": TTL_SECONDS,
        },
        "holds": args.holds,
        "producers": args.producers,
        "tessera_holds_per_s": round(tessera_holds_per_s, 1),
        "seed_holds_per_s": round(seed_holds_per_s, 1),
        "ratio": round(ratio, 3) if ratio is not None else None,
        "all_reserved": all(run.outcomes.get("reserved", 0) == run.holds for run in tessera_runs + seed_runs),
        "writer_profile": profile,
        "tessera_runs": [run.summary() for run in tessera_runs],
        "seed_runs": [run.summary() for run in seed_runs],
        "tessera_backlog": backlog,
        "limited_stock": limited,
    }


def report(
    args: argparse.Namespace,
    facts: dict[str, Any],
    tessera_runs: list[RunResult],
    seed_runs: list[RunResult],
    results: dict[str, Any],
) -> None:
    runs = (("tessera", tessera_runs), ("seed", seed_runs))
    print_table(
        f"Flash sale: {args.holds:,} holds of 1 piece, {args.producers} producers, {args.workers} worker(s)",
        ["system", "run", "decided", "wall s", "holds/s", "p50 ms", "p99 ms", "record p50", "reserved"],
        [_speed_row(label, i, run) for label, rs in runs for i, run in enumerate(rs)],
    )
    print_table(
        f"CPU cores used on average during the timed runs ({facts['cpu_count']} cores in all)",
        ["system", "run", "producers", "workers", "postgres", "redis", "cmds/batch", "batch ms"],
        [_cpu_row(label, i, run) for label, rs in runs for i, run in enumerate(rs)],
    )
    _report_phases(tessera_runs)
    print(
        f"\ntessera {results['tessera_holds_per_s']:,.1f} holds/s | seed {results['seed_holds_per_s']:,.1f} "
        f"holds/s | ratio tessera/seed {fmt(results['ratio'])}"
    )
    if results["writer_profile"]:
        _report_profile(results["writer_profile"])
    if results["tessera_backlog"]:
        _report_backlog(args, results["tessera_backlog"])
    _report_limited(results["limited_stock"])


def _speed_row(label: str, i: int, run: RunResult) -> list[Any]:
    lat = run.latency()
    record = run.summary().get("record_latency", {}).get("p50_ms")
    reserved = run.outcomes.get("reserved", 0)
    return [
        label,
        i + 1,
        run.decided,
        round(run.wall_s, 2),
        round(run.holds_per_s, 1),
        lat["p50_ms"],
        lat["p99_ms"],
        record,
        reserved,
    ]


def _cpu_row(label: str, i: int, run: RunResult) -> list[Any]:
    cores = run.cpu.get("cores", {})
    return [
        label,
        i + 1,
        cores.get("bench"),
        cores.get("workers"),
        cores.get("postgres"),
        cores.get("redis"),
        run.batches.get("commands_per_batch_avg"),
        run.batches.get("batch_ms_avg"),
    ]


def _report_phases(tessera_runs: list[RunResult]) -> None:
    if not any(run.phases for run in tessera_runs):
        return
    names = list(next(run.phases for run in tessera_runs if run.phases))
    print_table(
        "Where a Tessera hold's time goes, p50 ms (send → recorder → ticket → claim → applied → answer)",
        ["run", *names],
        [
            [i + 1, *(run.phases[n]["p50_ms"] for n in names)]
            for i, run in enumerate(tessera_runs)
            if run.phases
        ],
    )


def _report_profile(profile: dict[str, Any]) -> None:
    print_table(
        f"Worker profile (py-spy --gil, {profile['samples']:,} samples, {profile['holds_per_s']:,} holds/s "
        f"while sampled; stacks in {profile['file']})",
        ["% under", "function", "% in", "function"],
        [
            [t["percent"], t["function"], s["percent"], s["function"]]
            for t, s in zip(profile["total"], profile["self"], strict=False)
        ],
    )


def _report_backlog(args: argparse.Namespace, backlog: dict[str, Any]) -> None:
    wb = backlog["writer_batches"]
    print_table(
        f"Tessera backlog: {backlog['holds']:,} holds recorded with no worker, then {args.workers} worker(s) started",
        ["recorded/s", "applied/s", "apply s", "batches", "cmds/batch", "batch ms", "drained"],
        [
            [
                backlog["record_holds_per_s"],
                backlog["apply_holds_per_s"],
                backlog["apply_s"],
                wb["batches"],
                wb["commands_per_batch_avg"],
                wb["batch_ms_avg"],
                backlog["drained"],
            ]
        ],
    )


def _report_limited(limited: dict[str, Any]) -> None:
    print_table(
        f"Limited stock: {limited['stock']} pieces, {limited['holds']} holds of {limited['pieces_per_hold']} "
        f"(expect {limited['expected_reserved_holds']} reserved)",
        ["system", "reserved holds", "reserved pieces", "oversell", "reconcile"],
        [
            [
                "tessera",
                limited["tessera_reserved"],
                limited["tessera_reserved_pieces"],
                limited["oversell_tessera"],
                "clean" if limited["reconcile_clean"] else "DIRTY",
            ],
            [
                "seed",
                limited["seed_reserved"],
                limited["seed_reserved_pieces"],
                limited["oversell_seed"],
                "-",
            ],
        ],
    )


def failed(limited: dict[str, Any], backlog: dict[str, Any] | None) -> int:
    """Exit 1, naming each failure, when a system oversold, Tessera reserved other than expected,
    reconcile found a difference or the backlog did not drain."""
    failures = []
    if limited["tessera_reserved"] != limited["expected_reserved_holds"] or limited["oversell_tessera"]:
        failures.append(
            f"tessera reserved {limited['tessera_reserved']} holds / {limited['tessera_reserved_pieces']} pieces "
            f"(expected {limited['expected_reserved_holds']}, oversold {limited['oversell_tessera']})"
        )
    if limited["oversell_seed"]:
        failures.append(f"seed oversold {limited['oversell_seed']} pieces")
    if not limited["reconcile_clean"]:
        failures.append(f"reconcile found {len(limited['reconcile_differences'])} difference(s)")
    if backlog and not backlog["drained"]:
        failures.append("the backlog was not drained in time")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Expiry at scale: many pending holds, a few due soon; memory stays bounded, expiries stay on time.

1. `--holds` minus `--short` holds with the long TTL (15 min) are placed (1 line, 1 piece, over
   `--products` products) and applied: they stay pending (reserved) for the whole run.
2. Then `--short` holds due within the first minute: `--ten-second` of them at 10 s, the rest
   spread over 11-60 s — placed *after* the long ones, i.e. queued behind them.
3. The worker(s) and the scheduler (`tessera scheduler`, the sweep) run throughout; the bench waits
   until every short hold is due (plus `--tail` seconds).

Sampled every `--sample-interval` s: worker and scheduler RSS (/proc/PID/status VmRSS), Redis
``used_memory`` and the delayed Dramatiq messages (``*.DQ.msgs``). Lateness of each expiry due
during the run: the ``hold.expire`` command's ``applied_at`` − ``holds.expires_at`` (the hold
decided expired), and the ``line.expire`` one's (its pieces back in stock). (``holds.settled_at``
records when a hold was first decided — reserved — so it does not date the expiry.)

    python -m bench.expiry                       # 100,000 holds
    python -m bench.expiry --holds 400 --short 40 --ten-second 10 --short-max-ttl 15 --products 50  # smoke
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from bench.common import (
    BenchEnv,
    add_fleet_flags,
    base_parser,
    machine_facts,
    print_table,
    redis_used_memory,
    rss_kb,
    summary_ms,
    write_results,
)
from bench.workload import seed_catalogue, sku_of

NAME = "expiry"

LATENESS = """
SELECT h.ttl_seconds, h.status,
       extract(epoch FROM e.applied_at - h.expires_at) AS hold_late,
       (SELECT extract(epoch FROM max(c.applied_at) - h.expires_at) FROM hold_lines l
          JOIN commands c ON c.idempotency_key = 'line.expire:' || h.id::text || ':' || l.line_no
         WHERE l.hold_id = h.id) AS stock_late,
       e.applied_at < h.expires_at AS early
FROM holds h
LEFT JOIN commands e ON e.idempotency_key = 'hold.expire:' || h.id::text
WHERE h.expires_at <= :until AND h.idempotency_key LIKE 'exp-%'
"""


class Sampler:
    """Samples memory once per interval in a background thread."""

    def __init__(
        self, env: BenchEnv, interval: float, worker_pids: list[int], scheduler_pid: int | None
    ) -> None:
        self.env = env
        self.interval = interval
        self.worker_pids = worker_pids
        self.scheduler_pid = scheduler_pid
        self.phase = "start"
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._started = time.monotonic()
        self._dq_keys = [f"{env.namespace}:dramatiq:shard-{s}.DQ.msgs" for s in range(env.settings.shards)]

    def sample(self) -> dict[str, Any]:
        pipe = self.env.redis.pipeline(transaction=False)
        for key in self._dq_keys:
            pipe.hlen(key)
        delayed = sum(int(n) for n in pipe.execute())
        worker_rss = [rss_kb(pid) for pid in self.worker_pids]
        row = {
            "t_s": round(time.monotonic() - self._started, 2),
            "phase": self.phase,
            "worker_rss_kb": sum(r or 0 for r in worker_rss),
            "scheduler_rss_kb": rss_kb(self.scheduler_pid) if self.scheduler_pid else None,
            "redis_used_memory": redis_used_memory(self.env.redis),
            "delayed_messages": delayed,
        }
        self.samples.append(row)
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as error:  # a sample lost is not worth failing the bench
                self.samples.append({"t_s": round(time.monotonic() - self._started, 2), "error": repr(error)})

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def peak(self, field: str, phase: str | None = None) -> int | None:
        values = [
            s[field]
            for s in self.samples
            if field in s and s[field] is not None and (phase is None or s["phase"] == phase)
        ]
        return max(values) if values else None

    def last(self, field: str, phase: str | None = None) -> int | None:
        values = [
            s[field]
            for s in self.samples
            if field in s and s[field] is not None and (phase is None or s["phase"] == phase)
        ]
        return values[-1] if values else None


def place(
    env: BenchEnv,
    count: int,
    *,
    ttl_of: Callable[[int], int],
    key_prefix: str,
    products: int,
    producers: int,
    max_seconds: float,
) -> dict[str, Any]:
    """Place `count` one-line holds without waiting for their answers; returns the rate."""
    client = env.client
    lock = threading.Lock()
    next_k = iter(range(count))
    errors: dict[str, int] = {}
    placed = [0]
    deadline = time.monotonic() + max_seconds

    def producer(i: int) -> None:
        rng = random.Random(i)
        while time.monotonic() < deadline:
            with lock:
                k = next(next_k, None)
            if k is None:
                return
            line = [{"sku": sku_of(rng.randrange(products)), "quantity": "1", "unit": "piece"}]
            try:
                client.reserve(idempotency_key=f"{key_prefix}-{k}", lines=line, ttl_seconds=ttl_of(k))
            except Exception as error:
                with lock:
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                continue
            with lock:
                placed[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=producer, args=(i,), daemon=True) for i in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    return {
        "placed": placed[0],
        "wall_s": round(wall, 2),
        "placed_per_s": round(placed[0] / wall, 1) if wall > 0 else None,
        "errors": errors,
    }


def redis_breakdown(env: BenchEnv, samples_per_kind: int = 20) -> dict[str, dict[str, int]]:
    """Keys of this run's namespace by kind (wake, bell, lease, dramatiq, ...), with estimated bytes."""
    prefix = f"{env.namespace}:"
    counts: dict[str, int] = {}
    sampled: dict[str, list[int]] = {}
    for raw in env.redis.scan_iter(f"{prefix}*", count=5000):
        key = raw.decode()
        kind = key[len(prefix) :].split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
        sizes = sampled.setdefault(kind, [])
        if len(sizes) < samples_per_kind:
            sizes.append(int(env.redis.memory_usage(key) or 0))
    return {
        kind: {"keys": n, "approx_bytes": round(n * sum(sampled[kind]) / max(1, len(sampled[kind])))}
        for kind, n in sorted(counts.items())
    }


def hold_counts(env: BenchEnv) -> dict[str, int]:
    with env.engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM holds GROUP BY status")).all()
    return {status: int(n) for status, n in rows}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser("Expiry at scale: bounded memory and on-time expiry with many pending holds.")
    parser.add_argument("--holds", type=int, default=100_000, help="pending holds in all (long + short)")
    parser.add_argument("--short", type=int, default=1000, help="holds due within the first minute")
    parser.add_argument(
        "--ten-second", type=int, default=100, help="of the short holds, those with a 10 s TTL"
    )
    parser.add_argument("--short-max-ttl", type=int, default=60, help="the short TTLs spread over 11..this")
    parser.add_argument("--long-ttl", type=int, default=900, help="TTL of the other holds (seconds)")
    parser.add_argument("--products", type=int, default=1000)
    add_fleet_flags(parser, threads=False)
    parser.add_argument("--producers", type=int, default=32, help="threads placing holds")
    parser.add_argument(
        "--tail", type=float, default=15.0, help="seconds observed after the last short hold is due"
    )
    parser.add_argument("--sample-interval", type=float, default=1.0)
    parser.add_argument(
        "--max-seconds", type=float, default=900.0, help="bound on placing and applying holds"
    )
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.short > args.holds or args.ten_second > args.short:
        parser.error("need --ten-second <= --short <= --holds")
    if not 10 < args.short_max_ttl < args.long_ttl:
        parser.error("need 10 < --short-max-ttl < --long-ttl")
    return args


@dataclass
class Observed:
    """What the run saw: the long holds placed and applied, the short ones placed and expired."""

    long_placed: dict[str, Any]
    applied_in_time: bool
    redis_keys_after_long: dict[str, dict[str, int]]
    short_started_db: Any
    short_placed: dict[str, Any]
    last_due: Any
    observed_until: Any = None
    redis_keys_end: dict[str, dict[str, int]] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    """Place the long holds and wait until applied, then the short ones; watch them expire with
    memory sampled all along; measure every expiry's lateness; report, write, reconcile."""
    args = parse_args(argv)
    long_count = args.holds - args.short
    stock = max(10, 2 * args.holds // args.products + 10)
    rng = random.Random(args.seed)
    short_ttls = [
        10 if i < args.ten_second else rng.randint(11, args.short_max_ttl) for i in range(args.short)
    ]
    with BenchEnv(NAME, args, pool_size=min(args.producers, 40) + 4, shards=args.shards) as env:
        facts = machine_facts(env.engine, env.redis)
        workers = env.start_workers(args.workers)
        scheduler = env.start_scheduler()
        seed_catalogue(env, args.products, stock)
        with Sampler(env, args.sample_interval, [w.pid for w in workers], scheduler.pid) as sampler:
            observed = _place_long(env, args, sampler, long_count)
            observed = _place_short_and_watch(env, args, sampler, short_ttls, observed)
        with env.engine.connect() as conn:
            rows = conn.execute(text(LATENESS), {"until": observed.last_due}).all()
        counts = hold_counts(env)
        differences = env.reconcile()
    results = assemble(env, args, facts, stock, observed, rows, counts, differences, sampler)
    report(args, results)
    write_results(NAME, args.results_dir, results)
    if differences:
        print(f"FAILED: reconcile found {len(differences)} difference(s)")
    return 1 if results["due_not_expired"] or results["expired_early"] or differences else 0


def _place_long(env: BenchEnv, args: argparse.Namespace, sampler: Sampler, long_count: int) -> Observed:
    sampler.phase = "placing_long"
    long_placed = place(
        env,
        long_count,
        ttl_of=lambda k: args.long_ttl,
        key_prefix="exp-long",
        products=args.products,
        producers=args.producers,
        max_seconds=args.max_seconds,
    )
    sampler.phase = "applying_long"
    placed_at = time.monotonic()
    applied_in_time = env.wait_drained(args.max_seconds)
    long_placed["applied_s_after_placing"] = round(time.monotonic() - placed_at, 2)
    print(
        f"{long_placed['placed']:,} long holds placed at {long_placed['placed_per_s']:,}/s; all applied "
        f"{long_placed['applied_s_after_placing']}s after the last was placed: {applied_in_time}",
        flush=True,
    )
    return Observed(long_placed, applied_in_time, redis_breakdown(env), None, {}, None)


def _place_short_and_watch(
    env: BenchEnv, args: argparse.Namespace, sampler: Sampler, short_ttls: list[int], observed: Observed
) -> Observed:
    sampler.phase = "placing_short"
    observed.short_started_db = env.db_now()
    observed.short_placed = place(
        env,
        args.short,
        ttl_of=lambda k: short_ttls[k],
        key_prefix="exp-short",
        products=args.products,
        producers=args.producers,
        max_seconds=args.max_seconds,
    )
    sampler.phase = "observing"
    env.wait_drained(60)
    with env.engine.connect() as conn:
        observed.last_due = conn.execute(
            text("SELECT max(expires_at) FROM holds WHERE idempotency_key LIKE 'exp-short-%'")
        ).scalar_one()
    wait_s = (observed.last_due - env.db_now()).total_seconds() + args.tail
    print(f"{observed.short_placed['placed']:,} short holds placed; observing {wait_s:.0f}s", flush=True)
    end = time.monotonic() + max(0.0, wait_s)
    while time.monotonic() < end:
        env.check_alive()
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    observed.observed_until = env.db_now()
    observed.redis_keys_end = redis_breakdown(env)
    return observed


def _memory(sampler: Sampler) -> dict[str, dict[str, Any]]:
    return {
        "worker_rss_kb": {
            "start": sampler.samples[0].get("worker_rss_kb"),
            "after_long_holds": sampler.last("worker_rss_kb", "applying_long"),
            "peak": sampler.peak("worker_rss_kb"),
            "end": sampler.last("worker_rss_kb"),
        },
        "scheduler_rss_kb": {
            "start": sampler.samples[0].get("scheduler_rss_kb"),
            "peak": sampler.peak("scheduler_rss_kb"),
            "end": sampler.last("scheduler_rss_kb"),
        },
        "redis_used_memory": {
            "start": sampler.samples[0].get("redis_used_memory"),
            "after_long_holds": sampler.last("redis_used_memory", "applying_long"),
            "peak": sampler.peak("redis_used_memory"),
            "end": sampler.last("redis_used_memory"),
        },
        "delayed_messages": {
            "peak": sampler.peak("delayed_messages"),
            "end": sampler.last("delayed_messages"),
        },
    }


def assemble(
    env: BenchEnv,
    args: argparse.Namespace,
    facts: dict[str, Any],
    stock: int,
    observed: Observed,
    rows: Sequence[Any],
    counts: dict[str, int],
    differences: list[Any],
    sampler: Sampler,
) -> dict[str, Any]:
    """The results file's document (its keys are compared across commits: keep them)."""
    hold_late = [float(r.hold_late) for r in rows if r.hold_late is not None]
    stock_late = [float(r.stock_late) for r in rows if r.stock_late is not None]
    ten_late = [float(r.hold_late) for r in rows if r.hold_late is not None and r.ttl_seconds == 10]
    return {
        "bench": NAME,
        "machine": facts,
        "parameters": {
            "holds": args.holds,
            "long_holds": args.holds - args.short,
            "long_ttl_s": args.long_ttl,
            "short_holds": args.short,
            "ten_second_holds": args.ten_second,
            "short_ttl_range_s": [11, args.short_max_ttl],
            "products": args.products,
            "stock_per_product": stock,
            "shards": args.shards,
            "workers": args.workers,
            "producers": args.producers,
            "sweep_interval_s": env.settings.sweep_interval_seconds,
            "sweep_grace_s": env.settings.sweep_grace_seconds,
            "worker_threads": env.settings.worker_threads,
            "log_level": args.log_level,
        },
        "placing_long": observed.long_placed,
        "long_applied_in_time": observed.applied_in_time,
        "placing_short": observed.short_placed,
        "short_started_db": observed.short_started_db,
        "observed_until_db": observed.observed_until,
        "hold_status_counts": counts,
        "reconcile_clean": not differences,
        "reconcile_differences": differences[:20],
        "due_during_run": len(rows),
        "due_not_expired": sum(1 for r in rows if r.status != "expired"),
        "expired_early": sum(1 for r in rows if r.early),
        "lateness_hold_expired": summary_ms(hold_late),
        "lateness_stock_returned": summary_ms(stock_late),
        "lateness_ten_second_holds": summary_ms(ten_late),
        "memory": _memory(sampler),
        "redis_keys_after_long_holds": observed.redis_keys_after_long,
        "redis_keys_end": observed.redis_keys_end,
        "samples": sampler.samples,
    }


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    lateness = {
        "hold expired": results["lateness_hold_expired"],
        "stock returned": results["lateness_stock_returned"],
        "10 s holds": results["lateness_ten_second_holds"],
    }
    print_table(
        f"Expiry: {args.holds:,} holds ({args.holds - args.short:,} × {args.long_ttl}s, {args.short:,} due within "
        f"{args.short_max_ttl}s, {args.ten_second} at 10s), {args.shards} shards, {args.workers} worker(s)",
        ["lateness", "count", "p50 ms", "p99 ms", "max ms"],
        [[name, s["count"], s["p50_ms"], s["p99_ms"], s["max_ms"]] for name, s in lateness.items()],
    )
    _report_memory(results["memory"])
    _report_redis_keys(results["redis_keys_after_long_holds"], results["redis_keys_end"])
    print(
        f"due during the run: {results['due_during_run']:,}; not expired by the end: "
        f"{results['due_not_expired']}; expired early: {results['expired_early']}"
    )


def _report_memory(memory: dict[str, dict[str, Any]]) -> None:
    mb = 1024 * 1024
    phases = ("start", "after_long_holds", "peak", "end")
    print_table(
        "Memory",
        ["what", "start", "after long holds", "peak", "end"],
        [
            ["worker RSS MB", *(_mb(memory["worker_rss_kb"].get(k), 1024) for k in phases)],
            [
                "scheduler RSS MB",
                _mb(memory["scheduler_rss_kb"]["start"], 1024),
                "-",
                _mb(memory["scheduler_rss_kb"]["peak"], 1024),
                _mb(memory["scheduler_rss_kb"]["end"], 1024),
            ],
            ["Redis used MB", *(_mb(memory["redis_used_memory"].get(k), mb) for k in phases)],
            [
                "delayed messages",
                "-",
                "-",
                memory["delayed_messages"]["peak"],
                memory["delayed_messages"]["end"],
            ],
        ],
    )


def _report_redis_keys(after_long: dict[str, dict[str, int]], end: dict[str, dict[str, int]]) -> None:
    mb = 1024 * 1024
    print_table(
        "Redis keys of this run (estimated bytes from sampled MEMORY USAGE)",
        ["kind", "keys after long holds", "MB", "keys at end", "MB at end"],
        [
            [
                kind,
                after_long.get(kind, {}).get("keys"),
                _mb(after_long.get(kind, {}).get("approx_bytes"), mb),
                end.get(kind, {}).get("keys"),
                _mb(end.get(kind, {}).get("approx_bytes"), mb),
            ]
            for kind in sorted(set(after_long) | set(end))
        ],
    )


def _mb(value: int | None, unit: int) -> float | None:
    return None if value is None else round(value / unit, 1)


if __name__ == "__main__":
    raise SystemExit(main())

"""Open-loop latency: commands sent at a fixed rate, latency measured from each one's scheduled time.

A dispatcher schedules command i at ``t0 + i / rate`` and hands it to a pool of sender threads;
a command's latency runs from its *scheduled* send time (not from when a sender got to it) to the
moment the writer applied it, so a stalled system or an overloaded generator cannot hide its queue
(no coordinated omission). Commands follow the catalogue mix over 1,000 products: new holds of 1-3
lines (applied = the last of its line commands applied, i.e. the hold decided), payments and
releases of earlier holds (applied = that command applied).

Clock: the scheduled time is recorded as wall-clock time (``time.time()``) and compared with the
inbox's ``applied_at`` (PostgreSQL ``clock_timestamp()``), both read from the same machine's clock.

    python -m bench.latency                          # 500 and 1,000 commands/s, 20 s each
    python -m bench.latency --rates 50 --seconds 3 --products 50     # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import text

from bench.common import (
    BenchEnv,
    CpuMeter,
    add_catalogue_flags,
    add_fleet_flags,
    add_mix_flags,
    base_parser,
    check_threads,
    fleet_overrides,
    machine_facts,
    print_table,
    summary_ms,
    write_results,
)
from bench.workload import Mix, Popularity, Sent, seed_catalogue
from ops.progress import tracked

NAME = "latency"

SENT_TABLE = """
CREATE TABLE IF NOT EXISTS bench_sent (
    run int NOT NULL,
    key text NOT NULL,
    kind text NOT NULL,
    hold_id text NOT NULL,
    scheduled_at timestamptz NOT NULL
)
"""

APPLIED = """
WITH s AS (SELECT * FROM bench_sent WHERE run = :run),
holds AS (
    SELECT s.key, max(c.applied_at) AS applied_at, bool_and(c.status = 'applied') AS done
    FROM s JOIN hold_lines l ON l.hold_id = CAST(s.hold_id AS uuid)
    JOIN commands c ON c.idempotency_key = 'line.reserve:' || s.hold_id || ':' || l.line_no
    WHERE s.kind = 'hold' GROUP BY s.key
),
others AS (
    SELECT s.key, c.applied_at, c.status = 'applied' AS done
    FROM s JOIN commands c ON c.idempotency_key = s.key WHERE s.kind <> 'hold'
)
SELECT s.kind, extract(epoch FROM a.applied_at - s.scheduled_at), coalesce(a.done, false)
FROM s LEFT JOIN (SELECT * FROM holds UNION ALL SELECT * FROM others) a USING (key)
"""


class Record(NamedTuple):
    """A tuple of numbers and strings, which the collector stops tracking (see Sent)."""

    number: int  # its place in the schedule
    scheduled_wall: float
    lag_s: float
    sent: Sent


@dataclass
class Offered:
    """What one run offered: the commands sent, on time or late, and what went wrong."""

    records: list[Record]
    problems: dict[str, int]
    dropped: int
    send_wall: float


def run_rate(
    env: BenchEnv, mix: Mix, *, run: int, rate: float, seconds: float, senders: int, max_lag: float, seed: int
) -> dict[str, Any]:
    """Offer `rate` commands a second for `seconds` (open loop), drain, and measure each command's
    latency from its scheduled send time to applied."""
    before = env.last_batch_id()
    with CpuMeter(p.pid for p in env.procs) as meter:
        offered = _offer(
            env, mix, rate=rate, total=int(rate * seconds), senders=senders, max_lag=max_lag, seed=seed
        )
    drained = env.wait_drained(120)
    latencies, unapplied = _latencies(env, run, offered.records)
    return {
        "rate": rate,
        "seconds": seconds,
        "scheduled": int(rate * seconds),
        "sent": len(offered.records),
        "sent_per_s": round(len(offered.records) / offered.send_wall, 1) if offered.send_wall > 0 else None,
        "dropped_generator_behind": offered.dropped,
        "problems": offered.problems,
        "unapplied_after_drain": unapplied,
        "drained": drained,
        "latency": summary_ms(latencies["all"]),
        "latency_per_kind": {k: summary_ms(v) for k, v in sorted(latencies.items()) if k != "all"},
        "send_lag": summary_ms([r.lag_s for r in offered.records]),
        "cpu": meter.report(),
        "writer_batches": env.batch_stats(before),
    }


def _offer(
    env: BenchEnv, mix: Mix, *, rate: float, total: int, senders: int, max_lag: float, seed: int
) -> Offered:
    """Send command i at its scheduled time t0 + i / rate, whatever the answers do."""
    offered = Offered([], {}, 0, 0.0)
    lock = threading.Lock()
    local = threading.local()
    # The two clocks read together: schedule on the monotonic one, report on the wall clock.
    t0_mono = time.monotonic() + 0.2
    t0_wall = time.time() + 0.2

    def send(i: int) -> None:
        lag = time.monotonic() - (t0_mono + i / rate)
        if lag > max_lag:  # the generator is this far behind: stop offering load rather than run on
            with lock:
                offered.dropped += 1
            return
        rng = getattr(local, "rng", None)
        if rng is None:
            rng = local.rng = random.Random(f"{seed}-{threading.get_ident()}")
        try:
            sent = mix.send(env, rng, time.monotonic(), on_sent=lambda s: None)
        except Exception as error:
            with lock:
                offered.problems[type(error).__name__] = offered.problems.get(type(error).__name__, 0) + 1
            return
        with lock:
            offered.records.append(Record(i, t0_wall + i / rate, lag, sent))

    with ThreadPoolExecutor(senders) as pool:
        for i in range(total):
            delay = t0_mono + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, i)
        pool.shutdown(wait=True)
        offered.send_wall = time.monotonic() - t0_mono
    return offered


def _latencies(env: BenchEnv, run: int, records: list[Record]) -> tuple[dict[str, list[float]], int]:
    """Scheduled send → applied, per kind and in all (from the inbox), and how many never applied."""
    with env.engine.begin() as conn:
        conn.execute(text(SENT_TABLE))
        conn.execute(
            text(
                """
                INSERT INTO bench_sent (run, key, kind, hold_id, scheduled_at)
                SELECT :run, * FROM unnest(CAST(:keys AS text[]), CAST(:kinds AS text[]), CAST(:holds AS text[]),
                                           CAST(:scheduled AS timestamptz[]))
                """
            ),
            {
                "run": run,
                "keys": [r.sent.key for r in records],
                "kinds": [r.sent.kind for r in records],
                "holds": [r.sent.hold_id for r in records],
                "scheduled": [dt.datetime.fromtimestamp(r.scheduled_wall, dt.UTC) for r in records],
            },
        )
    with env.engine.connect() as conn:
        # Fresh statistics first: analyzed during the warm-up, bench_sent would look empty for this
        # run, and the planner would join it with nested loops over whole tables.
        conn.execute(text("ANALYZE bench_sent"))
        rows = conn.execute(text(APPLIED), {"run": run}).all()
    latencies: dict[str, list[float]] = {"all": []}
    unapplied = 0
    for kind, seconds_, done in rows:
        if not done or seconds_ is None:
            unapplied += 1
            continue
        latencies["all"].append(float(seconds_))
        latencies.setdefault(kind, []).append(float(seconds_))
    return latencies, unapplied


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser("Open-loop latency at fixed command rates, from each command's scheduled time.")
    parser.add_argument("--rates", default="500,1000", help="commands per second, one run each")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    parser.add_argument(
        "--warmup-seconds", type=float, default=5.0, help="untimed run at the first rate, then VACUUM ANALYZE"
    )
    add_catalogue_flags(parser)
    parser.add_argument("--distribution", default="uniform", choices=["uniform", "zipf"])
    add_fleet_flags(parser)
    parser.add_argument("--senders", type=int, default=32, help="sender threads")
    parser.add_argument(
        "--max-lag",
        type=float,
        default=30.0,
        help="a command whose sender is this many seconds late is dropped (and counted)",
    )
    add_mix_flags(parser)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    check_threads(parser, args.senders, "--senders")
    return args


def main(argv: list[str] | None = None) -> int:
    """Stock a catalogue, warm up, then one open-loop run per rate; report, write, reconcile."""
    args = parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    with BenchEnv(NAME, args, pool_size=min(args.senders, 48) + 4, **fleet_overrides(args)) as env:
        facts = machine_facts(env.engine, env.redis)
        env.start_workers(args.workers)
        seed_catalogue(env, args.products, args.stock)
        popularity = Popularity(args.products, args.distribution, args.zipf_s)
        if args.warmup_seconds:  # untimed, then VACUUM ANALYZE: a database in service (see BenchEnv.settle)
            _run(
                env, args, popularity, run=-1, rate=rates[0], seconds=args.warmup_seconds, seed=args.seed - 1
            )
            env.settle()
        runs = [
            _run(env, args, popularity, run=run, rate=rate, seconds=args.seconds, seed=args.seed + run)
            for run, rate in tracked(list(enumerate(rates)), "rates")
        ]
        differences = env.reconcile()
    report(args, runs)
    write_results(NAME, args.results_dir, assemble(env, args, facts, rates, runs, differences))
    if differences:
        print(f"FAILED: reconcile found {len(differences)} difference(s)")
        return 1
    return 0


def _run(
    env: BenchEnv,
    args: argparse.Namespace,
    popularity: Popularity,
    *,
    run: int,
    rate: float,
    seconds: float,
    seed: int,
) -> dict[str, Any]:
    mix = Mix(popularity, pay_share=args.pay_share, release_share=args.release_share, settle_after=1.0)
    result = run_rate(
        env, mix, run=run, rate=rate, seconds=seconds, senders=args.senders, max_lag=args.max_lag, seed=seed
    )
    if run >= 0:
        lat = result["latency"]
        print(
            f"rate {rate:g}/s: sent {result['sent_per_s']}/s, p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
            f"max {lat['max_ms']} ms",
            flush=True,
        )
    return result


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    print_table(
        f"Open loop over {args.products:,} products ({args.distribution}), {args.seconds:g}s per rate, "
        f"{args.workers} worker(s), {args.shards} shards; latency from scheduled send time to applied",
        ["rate/s", "sent/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "send lag p99", "unapplied", "dropped"],
        [
            [
                r["rate"],
                r["sent_per_s"],
                r["latency"]["p50_ms"],
                r["latency"]["p95_ms"],
                r["latency"]["p99_ms"],
                r["latency"]["max_ms"],
                r["send_lag"]["p99_ms"],
                r["unapplied_after_drain"],
                r["dropped_generator_behind"],
            ]
            for r in runs
        ],
    )


def assemble(
    env: BenchEnv,
    args: argparse.Namespace,
    facts: dict[str, Any],
    rates: list[float],
    runs: list[dict[str, Any]],
    differences: list[Any],
) -> dict[str, Any]:
    """The results file's document (its keys are compared across commits: keep them)."""
    return {
        "bench": NAME,
        "machine": facts,
        "parameters": {
            "rates": rates,
            "seconds": args.seconds,
            "products": args.products,
            "distribution": args.distribution,
            "zipf_s": args.zipf_s,
            "shards": args.shards,
            "workers": args.workers,
            "worker_threads": env.settings.worker_threads,
            "senders": args.senders,
            "max_lag_s": args.max_lag,
            "pay_share": args.pay_share,
            "release_share": args.release_share,
            "seed": args.seed,
            "log_level": args.log_level,
        },
        "runs": runs,
        "reconcile_clean": not differences,
        "reconcile_differences": differences[:20],
    }


if __name__ == "__main__":
    raise SystemExit(main())

"""Catalogue: throughput and latency over 1,000 products as shards and worker processes grow.

For each shard count (a fresh database each: routing is fixed per database), each worker count
(the shards split between the processes: ``--shards 0-3`` / ``4-7``) and each popularity
(uniform, Zipf s=1.1), `--producers` threads run a mixed workload for `--seconds`: new holds of
1-3 lines, payment confirmations and releases of earlier holds. Each producer waits for its
command's answer before sending the next (closed loop: a checkout service or payment relay), or
with ``--no-wait`` sends as fast as it records (saturation; latency then includes the backlog).

Figures per run, from the inbox (commands applied during the run, by the DB clock):
applied commands/s (every command a writer applied, follow-ups included) and enqueue → applied
latency (``applied_at - recorded_at``) p50/p95/p99.

A closed loop measures the whole system on this machine: the producers, their recording and the
writers share its cores. The writers' capacity alone is measured after each run (``--backlog``):
that many commands of the same mix are recorded while no worker runs, then the workers start and
drain them; backlog commands drained per second by the DB clock (first to last applied).

    python -m bench.catalog                                   # a few minutes
    python -m bench.catalog --shard-counts 2 --worker-counts 1 --distributions zipf --seconds 3 \
        --products 50 --backlog 500                           # smoke
"""

from __future__ import annotations

import argparse
import itertools
import random
import threading
import time
from typing import Any

from sqlalchemy import text

from bench.common import (
    BenchEnv,
    CpuMeter,
    add_catalogue_flags,
    add_mix_flags,
    base_parser,
    check_threads,
    machine_facts,
    print_table,
    split_shards,
    summary_ms,
    write_results,
)
from bench.workload import Mix, Popularity, Sent, applied_between, seed_catalogue
from domain.errors import ResultTimeout
from ops.progress import tracked

NAME = "catalog"


def run_phase(
    env: BenchEnv,
    mix: Mix,
    *,
    producers: int,
    seconds: float,
    wait: bool,
    wait_timeout: float,
    seed: int,
) -> dict[str, Any]:
    stop = threading.Event()
    lock = threading.Lock()
    sent: dict[str, int] = {}
    problems: dict[str, int] = {}
    examples: list[str] = []

    def count(s: Sent) -> None:
        with lock:
            sent[s.kind] = sent.get(s.kind, 0) + 1

    def producer(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        while not stop.is_set():
            try:
                mix.send(env, rng, time.monotonic(), wait=wait_timeout if wait else None, on_sent=count)
            except Exception as error:
                name = "timeout" if isinstance(error, ResultTimeout) else type(error).__name__
                with lock:
                    problems[name] = problems.get(name, 0) + 1
                    if len(examples) < 5:
                        examples.append(repr(error))

    before = env.last_batch_id()
    threads = [threading.Thread(target=producer, args=(i,), daemon=True) for i in range(producers)]
    start_db = env.db_now()
    with CpuMeter(p.pid for p in env.procs) as meter:
        started = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - started < seconds:
            time.sleep(min(0.5, seconds))
            env.check_alive()
        stop.set()
        for t in threads:
            t.join()
        end_db = env.db_now()
    wall = (end_db - start_db).total_seconds()
    applied = applied_between(env, start_db, end_db)
    drained = env.wait_drained(120)
    return {
        **_applied_summary(applied, sent, wall),
        "problems": problems,
        "problem_examples": examples,
        "drained_after": drained,
        "cpu": meter.report(),
        "writer_batches": env.batch_stats(before),
    }


def _applied_summary(applied: dict[str, Any], sent: dict[str, int], wall: float) -> dict[str, Any]:
    """What a timed run sent and the writers applied in it: rates, the busiest shard, latencies."""
    per_shard = applied["per_shard"]
    lat = applied["latencies_s"]
    return {
        "wall_s": round(wall, 3),
        "sent": dict(sorted(sent.items())),
        "sent_per_s": round(sum(sent.values()) / wall, 1) if wall > 0 else None,
        "applied": applied["count"],
        "applied_per_s": round(applied["count"] / wall, 1) if wall > 0 else None,
        "applied_per_kind": dict(sorted(applied["per_kind"].items())),
        "busiest_shard_share": round(max(per_shard.values()) / applied["count"], 3)
        if applied["count"]
        else None,
        "latency_producer_sent": summary_ms(lat["producer_sent"]),
        "latency_all": summary_ms(lat["all"]),
        "latency_per_kind": {
            k: summary_ms(v) for k, v in sorted(lat.items()) if k not in ("all", "producer_sent")
        },
    }


# The backlog's commands (recorded before the drain began) and all the writers applied meanwhile.
_DRAINED = """
    SELECT count(*) FILTER (WHERE recorded_at < :since), count(*), min(applied_at), max(applied_at)
    FROM commands WHERE applied_at >= :since
"""


def drain_phase(
    env: BenchEnv, mix: Mix, *, workers: int, backlog: int, producers: int, timeout: float, seed: int
) -> dict[str, Any]:
    """Stop the workers, record `backlog` commands of the mix, start `workers` processes and time
    their drain: from the first command applied to the last, by the DB clock (the processes'
    start-up is not counted). Leaves `workers` processes running."""
    env.stop_processes()
    count = itertools.count()

    def producer(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        while next(count) < backlog:
            mix.send(env, rng, time.monotonic(), on_sent=lambda _: None)

    threads = [threading.Thread(target=producer, args=(i,), daemon=True) for i in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pending = env.pending_count()
    since, before = env.db_now(), env.last_batch_id()
    env.start_workers(workers)
    drained = env.wait_drained(timeout)
    with env.engine.connect() as conn:
        from_backlog, applied, first, last = conn.execute(text(_DRAINED), {"since": since}).one()
    seconds = (last - first).total_seconds() if first is not None and last is not None else 0.0
    return {
        "backlog": pending,
        "drained": drained,
        "seconds": round(seconds, 3),
        "drained_per_s": round(from_backlog / seconds, 1) if seconds > 0 else None,
        "applied": applied,
        "applied_per_s": round(applied / seconds, 1) if seconds > 0 else None,
        "writer_batches": env.batch_stats(before),
    }


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser("Catalogue throughput and latency by shards, worker processes and popularity.")
    add_catalogue_flags(parser)
    parser.add_argument("--shard-counts", default="1,2,4,8", help="TESSERA_SHARDS values (a database each)")
    parser.add_argument("--worker-counts", default="1,2", help="worker processes splitting the shards")
    parser.add_argument("--distributions", default="uniform,zipf", help="product popularity: uniform, zipf")
    parser.add_argument("--producers", type=int, default=32, help="producer threads")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each run")
    parser.add_argument(
        "--warmup-seconds", type=float, default=4.0, help="untimed run per database, then VACUUM ANALYZE"
    )
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="closed loop: producers wait for each answer (--no-wait: send as fast as recorded)",
    )
    parser.add_argument("--wait-timeout", type=float, default=30.0, help="seconds to wait for one answer")
    add_mix_flags(parser)
    parser.add_argument(
        "--backlog",
        type=int,
        default=12000,
        help="after each run, commands recorded with no worker running and then drained (0: skip)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    args = parser.parse_args(argv)
    check_threads(parser, args.producers, "--producers")
    return args


def main(argv: list[str] | None = None) -> int:
    """For each shard count, a database: stock the catalogue, warm up, then each worker count and
    popularity: a timed closed-loop run and a backlog drained; report, write, reconcile."""
    args = parse_args(argv)
    facts: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    reconcile: dict[int, list[str]] = {}
    for shards in parse_ints(args.shard_counts):
        with BenchEnv(f"{NAME}{shards}", args, pool_size=min(args.producers, 40) + 4, shards=shards) as env:
            facts = facts or machine_facts(env.engine, env.redis)
            _stock_and_warm(env, args, shards)
            for workers in tracked(parse_ints(args.worker_counts), f"shards={shards}: worker counts"):
                runs += _worker_runs(env, args, shards, workers, first_seed=args.seed + len(runs))
            env.wait_drained(120)
            reconcile[shards] = env.reconcile()
    report(args, runs)
    write_results(NAME, args.results_dir, assemble(args, facts, runs, reconcile))
    if any(reconcile.values()):
        print(f"FAILED: reconcile found differences: {reconcile}")
        return 1
    return 0


def _phase(
    env: BenchEnv, args: argparse.Namespace, distribution: str, seconds: float, seed: int
) -> dict[str, Any]:
    mix = Mix(
        Popularity(args.products, distribution, args.zipf_s),
        pay_share=args.pay_share,
        release_share=args.release_share,
        settle_after=0.0 if args.wait else 1.0,
    )
    return run_phase(
        env,
        mix,
        producers=args.producers,
        seconds=seconds,
        wait=args.wait,
        wait_timeout=args.wait_timeout,
        seed=seed,
    )


def _stock_and_warm(env: BenchEnv, args: argparse.Namespace, shards: int) -> None:
    env.start_workers(max(parse_ints(args.worker_counts)))
    setup = time.monotonic()
    seed_catalogue(env, args.products, args.stock)
    if args.warmup_seconds:  # untimed, then VACUUM ANALYZE: a database in service
        _phase(env, args, "uniform", args.warmup_seconds, args.seed - 1)
        env.settle()
    print(
        f"shards={shards}: {args.products} products stocked and warmed up in {time.monotonic() - setup:.1f}s",
        flush=True,
    )


def _worker_runs(
    env: BenchEnv, args: argparse.Namespace, shards: int, workers: int, *, first_seed: int
) -> list[dict[str, Any]]:
    """With `workers` processes splitting the shards: one timed run per popularity, and its drain."""
    if workers > shards:
        return [{"shards": shards, "workers": workers, "skipped": "fewer shards than workers"}]
    env.stop_processes()
    env.start_workers(workers)
    runs: list[dict[str, Any]] = []
    for distribution in args.distributions.split(","):
        popularity = Popularity(args.products, distribution, args.zipf_s)
        run = {
            "shards": shards,
            "workers": workers,
            "worker_shards": split_shards(shards, workers),
            "distribution": distribution,
            "top_product_share": round(popularity.top_share, 4),
            **_phase(env, args, distribution, args.seconds, first_seed + len(runs)),
        }
        runs.append(run)
        lat = run["latency_producer_sent"]
        print(
            f"  shards={shards} workers={workers} {distribution:7s} "
            f"applied {run['applied_per_s']:,}/s  p50 {lat['p50_ms']} ms  p99 {lat['p99_ms']} ms",
            flush=True,
        )
        if args.backlog:
            run["drain"] = drain_phase(
                env,
                Mix(popularity, pay_share=args.pay_share, release_share=args.release_share),
                workers=workers,
                backlog=args.backlog,
                producers=args.producers,
                timeout=args.wait_timeout * 4,
                seed=first_seed + 100 + len(runs),
            )
            print(
                f"  shards={shards} workers={workers} {distribution:7s} "
                f"backlog of {run['drain']['backlog']:,} drained at {run['drain']['drained_per_s']:,}/s",
                flush=True,
            )
    return runs


def _speed_row(run: dict[str, Any]) -> list[Any]:
    if "skipped" in run:
        return [run["shards"], run["workers"], "-", "skipped", None, None, None, None, None, None]
    lat, cores = run["latency_producer_sent"], run["cpu"]["cores"]
    return [
        run["shards"],
        run["workers"],
        run["distribution"],
        run["applied_per_s"],
        lat["p50_ms"],
        lat["p95_ms"],
        lat["p99_ms"],
        run["busiest_shard_share"],
        run["writer_batches"]["commands_per_batch_avg"],
        round(sum(cores.values()), 2),
    ]


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    print_table(
        f"Catalogue: {args.products:,} products, {args.producers} producers "
        f"({'closed loop' if args.wait else 'no wait'}), {args.seconds:g}s per run; latency = enqueue → applied",
        [
            "shards",
            "workers",
            "popularity",
            "applied/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "top shard",
            "cmds/batch",
            "cores",
        ],
        [_speed_row(run) for run in runs],
    )
    if args.backlog:
        print_table(
            f"Capacity: {args.backlog:,} commands of the mix recorded with no worker running, then drained",
            ["shards", "workers", "popularity", "backlog", "drained/s", "applied/s", "cmds/batch"],
            [
                [
                    run["shards"],
                    run["workers"],
                    run["distribution"],
                    run["drain"]["backlog"],
                    run["drain"]["drained_per_s"],
                    run["drain"]["applied_per_s"],
                    run["drain"]["writer_batches"]["commands_per_batch_avg"],
                ]
                for run in runs
                if "drain" in run
            ],
        )


def assemble(
    args: argparse.Namespace,
    facts: dict[str, Any],
    runs: list[dict[str, Any]],
    reconcile: dict[int, list[str]],
) -> dict[str, Any]:
    """The results file's document (its keys are compared across commits: keep them)."""
    return {
        "bench": NAME,
        "machine": facts,
        "parameters": {
            "products": args.products,
            "stock_per_product": args.stock,
            "shard_counts": parse_ints(args.shard_counts),
            "worker_counts": parse_ints(args.worker_counts),
            "distributions": args.distributions.split(","),
            "zipf_s": args.zipf_s,
            "producers": args.producers,
            "seconds": args.seconds,
            "wait": args.wait,
            "pay_share": args.pay_share,
            "release_share": args.release_share,
            "hold_lines": "1-3 distinct products, 1-4 pieces each",
            "seed": args.seed,
            "backlog": args.backlog,
            "log_level": args.log_level,
        },
        "runs": runs,
        "reconcile_clean": not any(reconcile.values()),
        "reconcile_differences": {str(k): v[:20] for k, v in reconcile.items() if v},
    }


if __name__ == "__main__":
    raise SystemExit(main())

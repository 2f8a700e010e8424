"""Flash sale through the front door: one hot product held over HTTP by `wrk` (a load tool nobody
here wrote), each request with an Idempotency-Key of its own and `?wait=2`, against
`tessera api --workers 2` and one worker; in the same run, the seed's design behind the same HTTP
stack (`bench/seed_http.py`: FastAPI on uvicorn, served as `tessera api` serves, by
`producers.http.serve`; each request its own `SELECT … FOR UPDATE`).
Reports holds/s (decided within the wait), requests/s, p50 / p99 latency and errors at each
connection count, and the ratio; writes `bench/results/http_flash_sale.json`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.chaos.servers import free_port, wait_up
from bench.common import ROOT, BenchEnv, base_parser, machine_facts, print_table, write_results
from bench.flash_sale import seed_setup, seed_stock
from db.tokens import create_token
from ops.progress import tracked

NAME = "http_flash_sale"
SKU = "HTTP-HOT-60x60"
SCRIPT = Path(__file__).with_name("http_flash_sale.lua")
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(
        "Flash sale over HTTP with wrk: Tessera's front door vs the seed behind the same stack."
    )
    parser.add_argument("--connections", default="32,256", help="wrk connection counts, one run each")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--api-workers", type=int, default=2, help="`tessera api --workers`")
    parser.add_argument("--wait", type=float, default=2.0, help="?wait= of each hold request")
    parser.add_argument("--stock", type=int, default=1_000_000, help="pieces of the hot product on each side")
    parser.add_argument("--warmup-seconds", type=int, default=3, help="untimed wrk run per system first")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Stock both sides alike, start both servers, warm each up, then wrk at each connection count
    on each system in turn; report and write."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("FAILED: wrk is not installed (apt-get install -y wrk)")
        return 1
    with BenchEnv(NAME, args, shards=16) as env:
        facts = machine_facts(env.engine, env.redis)
        token = prepare(env, args)
        urls = {"tessera": start_tessera(env, args), "seed": start_seed(env, args)}
        for system, url in urls.items():
            if args.warmup_seconds:
                wrk(url, token, args, connections=32, seconds=args.warmup_seconds, run=f"warm-{system}")
        plan = [
            (c, system)
            for c in [int(c) for c in args.connections.split(",")]
            for system in ("tessera", "seed")
        ]
        runs = [
            {
                "system": system,
                "connections": connections,
                **wrk(urls[system], token, args, connections, args.seconds, f"{system}-{connections}"),
            }
            for connections, system in tracked(plan, "wrk runs")
        ]
        differences = env.reconcile()
    results = assemble(args, facts, runs, differences)
    report(args, results)
    write_results(NAME, args.results_dir, results)
    return 1 if differences or any(r["errors"] for r in runs if r["system"] == "tessera") else 0


def prepare(env: BenchEnv, args: argparse.Namespace) -> str:
    """The hot product on both sides, a worker holding every shard, and a checkout token."""
    env.seed_warehouses()
    env.client.upsert_product(sku=SKU, name="HTTP flash sale tile", pieces_per_box=4, sqm_per_box="1.44")
    env.start_workers(1)
    env.client.receive(
        idempotency_key="rcv-hot", warehouse="BUC1", sku=SKU, quantity=args.stock, lot="L1"
    ).wait(30)
    seed_setup(env)
    seed_stock(env, SKU, args.stock)
    with env.engine.begin() as conn:
        return create_token(conn, "checkout", "http flash sale")[1]


def start_tessera(env: BenchEnv, args: argparse.Namespace) -> str:
    port = free_port()
    env.start("api", "--port", str(port), "--workers", str(args.api_workers))
    url = f"http://127.0.0.1:{port}"
    wait_up(url)
    return url


def start_seed(env: BenchEnv, args: argparse.Namespace) -> str:
    port = free_port()
    log = open(env.log_dir / "seed-http.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producers.http.serve",  # the server stack `tessera api` runs on
            "bench.seed_http:app_factory",
            "--port",
            str(port),
            "--workers",
            str(args.api_workers),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SEED_DATABASE_URL": env.database_url},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    env.procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, "/docs")
    return url


def wrk(
    url: str, token: str, args: argparse.Namespace, connections: int, seconds: int, run: str
) -> dict[str, Any]:
    """One wrk run; its figures parsed from wrk's report."""
    done = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(args.wrk_threads, connections)),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(SCRIPT),
            f"{url}/v1/holds?wait={args.wait:g}",
        ],
        env={**os.environ, "BENCH_TOKEN": token, "BENCH_SKU": SKU, "BENCH_RUN": run},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    return parse_wrk(done.stdout, seconds) | {"wrk_exit": done.returncode}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return round(float(value) * UNITS[unit], 2)


def parse_wrk(out: str, seconds: int) -> dict[str, Any]:
    requests = re.search(r"(\d+) requests in", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    decided = re.search(r"DECIDED (\d+)", out)
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    total = int(requests.group(1)) if requests else 0
    return {
        "requests": total,
        "requests_per_s": float(m.group(1)) if (m := re.search(r"Requests/sec:\s+([\d.]+)", out)) else None,
        "holds_per_s": round(int(decided.group(1)) / seconds, 1) if decided else None,
        "decided_within_wait": int(decided.group(1)) if decided else None,
        "p50_ms": _ms(percentiles["50"]) if "50" in percentiles else None,
        "p99_ms": _ms(percentiles["99"]) if "99" in percentiles else None,
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
        "wrk_report": out,
    }


def assemble(
    args: argparse.Namespace, facts: dict[str, Any], runs: list[dict[str, Any]], differences: list[str]
) -> dict[str, Any]:
    ratios = {}
    for connections in {r["connections"] for r in runs}:
        by = {r["system"]: r for r in runs if r["connections"] == connections}
        seed, tessera = by["seed"]["holds_per_s"], by["tessera"]["holds_per_s"]
        ratios[str(connections)] = round(tessera / seed, 2) if seed and tessera else None
    return {
        "bench": NAME,
        "machine": facts,
        "parameters": {
            "connections": args.connections,
            "seconds": args.seconds,
            "wrk_threads": args.wrk_threads,
            "api_workers": args.api_workers,
            "wait_s": args.wait,
        },
        "runs": runs,
        "ratio_holds_per_s": ratios,
        "reconcile_clean": not differences,
    }


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print_table(
        f"Flash sale over HTTP (wrk, {args.seconds}s per run, ?wait={args.wait:g}, {args.api_workers} server processes)",
        ["system", "connections", "holds/s", "requests/s", "p50 ms", "p99 ms", "errors"],
        [
            [
                r["system"],
                r["connections"],
                r["holds_per_s"],
                r["requests_per_s"],
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
            ]
            for r in results["runs"]
        ],
    )
    print(f"\nratio tessera/seed (holds/s) by connections: {results['ratio_holds_per_s']}")


if __name__ == "__main__":
    raise SystemExit(main())

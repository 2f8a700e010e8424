"""The README's plots, drawn from bench/results: throughput against shards, latency percentiles.

python -m bench.plots            # writes docs/catalog_throughput.png and docs/latency.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt
from matplotlib.ticker import ScalarFormatter

from bench.common import DEFAULT_RESULTS, ROOT

PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")


def _load(results: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    return data


def _caption(data: dict[str, Any]) -> str:
    machine, git = data["machine"], data["machine"].get("git", {})
    version = str(machine["postgresql_version"]).removeprefix("PostgreSQL ").split(" ")[0]
    return f"{machine['cpu_count']} cores, PostgreSQL {version}, commit {git.get('commit', '?')[:8]}"


def catalog_throughput(data: dict[str, Any], out: Path) -> None:
    """Closed loop: applied commands/s and p99 latency against shard count; capacity: a recorded
    backlog drained per second (when the run measured it). A line per (distribution, workers)."""
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in data["runs"]:
        if "skipped" in run:  # e.g. fewer shards than worker processes
            continue
        series.setdefault((run["distribution"], run["workers"]), []).append(run)
    drains = any("drain" in run for runs in series.values() for run in runs)
    fig, axes = plt.subplots(1, 3 if drains else 2, figsize=(15 if drains else 10, 4))
    rate, p99 = axes[0], axes[1]
    titles = [(rate, "closed loop: applied commands/s"), (p99, "closed loop: enqueue → applied p99 (ms)")]
    for (distribution, workers), runs in sorted(series.items()):
        runs.sort(key=lambda r: r["shards"])
        label = f"{distribution}, {workers} worker{'s' if workers > 1 else ''}"
        shards = [r["shards"] for r in runs]
        rate.plot(shards, [r["applied_per_s"] for r in runs], marker="o", label=label)
        p99.plot(shards, [r["latency_producer_sent"]["p99_ms"] for r in runs], marker="o", label=label)
        if drains:
            axes[2].plot(shards, [r["drain"]["drained_per_s"] for r in runs], marker="o", label=label)
    if drains:
        titles.append((axes[2], "capacity: backlog commands drained/s"))
    for axis, title in titles:
        axis.set_xscale("log", base=2)
        axis.set_xlabel("shards")
        axis.set_title(title, fontsize=10)
        axis.grid(True, alpha=0.3)
    rate.legend(fontsize=8)
    fig.suptitle(f"catalog: 1,000 products ({_caption(data)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def latency_percentiles(data: dict[str, Any], out: Path) -> None:
    """Open-loop latency percentiles (from each command's scheduled send time) per offered rate."""
    fig, axis = plt.subplots(figsize=(6, 4))
    runs = sorted(data["runs"], key=lambda r: r["rate"])
    width = 0.8 / len(PERCENTILES)
    for i, key in enumerate(PERCENTILES):
        axis.bar(
            [n + i * width for n in range(len(runs))],
            [r["latency"][key] or 0 for r in runs],
            width,
            label=key.removesuffix("_ms"),
        )
    axis.set_xticks([n + width for n in range(len(runs))], [f"{r['rate']:,.0f}/s" for r in runs])
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(ScalarFormatter())
    axis.set_ylabel("enqueue → applied (ms, log scale)")
    axis.axhline(50, color="grey", linestyle="--", linewidth=1)
    axis.text(len(runs) - 0.5, 52, "50 ms goal", fontsize=8, color="grey", ha="right")
    axis.legend(fontsize=8)
    axis.set_title(f"latency: open loop ({_caption(data)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    catalog_throughput(_load(args.results_dir, "catalog"), args.out_dir / "catalog_throughput.png")
    latency_percentiles(_load(args.results_dir, "latency"), args.out_dir / "latency.png")
    print(f"plots written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

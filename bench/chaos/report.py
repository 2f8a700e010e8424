"""The tables printed at the end, and the figures they hold for the results file."""

from __future__ import annotations

from typing import Any

from bench.chaos.checks import Check, Outcome
from bench.chaos.faults import FAULT_KINDS, Fault
from bench.chaos.journal import Journal, say
from bench.chaos.traffic import ACTIONS, BUCKETS
from bench.common import percentile, print_table, summary_ms
from tessera.settings import Settings


def timing_rows(outcomes: list[Outcome]) -> list[list[Any]]:
    rows = []
    for kind in ACTIONS:
        for bucket in BUCKETS:
            mine = [o for o in outcomes if o.ack.kind == kind and o.ack.bucket == bucket]
            before = [o for o in mine if o.in_time]
            after = [o for o in mine if not o.in_time]
            rows.append(
                [
                    kind,
                    bucket,
                    len(mine),
                    len(before),
                    sum(o.honoured for o in before),
                    len(after),
                    sum(o.expired_first for o in after),
                ]
            )
    return rows


def recovery_by_kind(faults: list[Fault]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for kind in FAULT_KINDS:
        mine = [f for f in faults if f.kind == kind and f.started is not None]
        times = [f.recovery_s for f in mine if f.recovery_s is not None]
        table[kind] = {
            "injected": len(mine),
            "verified": sum(f.verified for f in mine),
            "recovery_p50_s": percentile(times, 50),
            "recovery_max_s": max(times) if times else None,
            "not_recovered": len(mine) - len(times),
        }
    return table


def ack_rows(journal: Journal) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for ack in journal.acks:
        row = table.setdefault(ack.kind, {"acknowledged": 0, "resends": 0, "retried": 0})
        row["resends" if ack.resend else "acknowledged"] += 1
        row["retried"] += ack.attempts > 1
    return table


def goals(lateness: list[float], settings: Settings) -> dict[str, Any]:
    p99, most = percentile(lateness, 99), max(lateness) if lateness else None
    bound = settings.lease_ttl_seconds + settings.sweep_interval_seconds + 1
    return {
        "expiry_lateness_p99_s": p99,
        "p99_goal_s": 2.0,
        "p99_met": p99 is None or p99 <= 2.0,
        "expiry_lateness_max_s": most,
        "max_goal_s": bound,
        "max_met": most is None or most <= bound,
    }


def report(
    faults: list[Fault],
    journal: Journal,
    settings: Settings,
    checks: list[Check],
    outcomes: list[Outcome],
    lateness: list[float],
) -> dict[str, Any]:
    """Prints the tables, then each failed check's detail; returns their figures."""
    recovery = recovery_by_kind(faults)
    print_table(
        "Faults (recovery: from the fault's mark until what was recorded or due before it, and a probe on every shard, are applied)",
        ["kind", "injected", "verified", "recovery p50 s", "recovery max s", "not recovered"],
        [[k, *r.values()] for k, r in recovery.items()],
    )
    acks = ack_rows(journal)
    print_table(
        "Commands acknowledged (retried: the call raised at least once and was resent with its key)",
        ["kind", "acknowledged", "resends", "retried"],
        [[k, *r.values()] for k, r in sorted(acks.items())],
    )
    timing = timing_rows(outcomes)
    print_table(
        "Timed payments and releases on reserved holds, by planned moment around expires_at",
        ["kind", "bucket", "sent", "recorded before", "honoured", "recorded at/after", "expired first"],
        timing,
    )
    late = summary_ms(lateness)
    aims = goals(lateness, settings)
    print_table(
        "Expiry lateness (hold.expire applied_at - expires_at, holds that ended expired)",
        ["count", "p50 ms", "p99 ms", "max ms", "goal p99 ms", "goal max ms", "goals met"],
        [
            [
                late["count"],
                late["p50_ms"],
                late["p99_ms"],
                late["max_ms"],
                2000,
                aims["max_goal_s"] * 1000,
                "yes" if aims["p99_met"] and aims["max_met"] else "NO",
            ]
        ],
    )
    print_table(
        "Checks",
        ["check", "value", "result"],
        [[c.name, c.value, "PASS" if c.passed else "FAIL"] for c in checks],
    )
    for check in checks:
        for line in check.detail if not check.passed else []:
            say(f"  {check.name}: {line}")
    return {
        "recovery_by_kind": recovery,
        "acknowledged": acks,
        "timing": [
            dict(
                zip(
                    (
                        "kind",
                        "bucket",
                        "sent",
                        "recorded_before",
                        "honoured",
                        "recorded_at_or_after",
                        "expired_first",
                    ),
                    r,
                    strict=True,
                )
            )
            for r in timing
        ],
        "expiry_lateness": late,
        "goals": aims,
    }

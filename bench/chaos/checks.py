"""After the run: the drain, then the checks that must all hold (see the package docstring,
bench/chaos/__init__.py), and the expiry lateness the goals are printed against."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from bench.chaos.faults import FAULT_KINDS, Fault
from bench.chaos.journal import Ack, Journal
from bench.chaos.processes import Fleet
from bench.chaos.traffic import ACTIONS
from bench.common import ROOT

MOVEMENT_SOURCES = {
    "reservation": {"line.reserve", "line.reallocate", "line.sell"},
    "sale": {"line.confirm", "line.sell"},
    "release": {"line.release"},
    "expiry": {"line.expire"},
    "return": {"line.return", "stock.return"},
}
"""Which commands about a hold line write which of its ledger rows (a line.* kind not named here
may write any): the line commands, and a customer's return (stock.return)."""
KNOWN_LINE_COMMANDS = set().union(*MOVEMENT_SOURCES.values())

DRAIN_QUERY = text(
    """
    SELECT (SELECT count(*) FROM commands WHERE status = 'recorded') AS recorded,
           (SELECT count(*) FROM commands WHERE status = 'scheduled' AND not_before <= clock_timestamp()) AS due,
           (SELECT count(*) FROM holds WHERE status IN ('pending', 'reallocating')) AS unsettled,
           (SELECT count(*) FROM holds WHERE expires_at > clock_timestamp()) AS not_yet_due
    """
)


def drain(engine: Engine, fleet: Fleet, timeout: float) -> dict[str, Any]:
    """Wait until nothing is left to apply and every hold has passed its expires_at."""
    started = time.monotonic()
    state: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        fleet.watch()
        try:
            with engine.connect() as conn:
                state = dict(conn.execute(DRAIN_QUERY).one()._mapping)
        except Exception as error:
            state = {"error": repr(error)}
        if state.get("error") is None and not any(state.values()):
            return {"drained": True, "seconds": round(time.monotonic() - started, 2)}
        time.sleep(0.2)
    return {"drained": False, "seconds": round(time.monotonic() - started, 2), "left": state}


@dataclass(slots=True)
class Check:
    name: str
    value: Any
    passed: bool
    detail: list[str] = field(default_factory=list)


def _scalar(conn: Connection, sql: str, **params: Any) -> int:
    return int(conn.execute(text(sql), params).scalar_one() or 0)


def check_lost(conn: Connection, acks: list[Ack]) -> Check:
    keys = sorted({a.key for a in acks})
    missing = conn.execute(
        text(
            "SELECT k, c.status FROM unnest(CAST(:keys AS text[])) AS k "
            "LEFT JOIN commands c ON c.idempotency_key = k WHERE c.status IS DISTINCT FROM 'applied'"
        ),
        {"keys": keys},
    ).all()
    holds: dict[str, str] = {
        k: h for k, h in conn.execute(text("SELECT idempotency_key, id::text FROM holds"))
    }
    wrong = [a for a in acks if a.kind == "hold.place" and holds.get(a.key) != a.hold_id]
    detail = [f"{k}: {status or 'missing'}" for k, status in missing]
    detail += [f"{a.key}: acknowledged hold {a.hold_id}, inbox has {holds.get(a.key)}" for a in wrong]
    return Check("lost (acknowledged, not applied)", len(detail), not detail, detail[:20])


def check_unsettled(conn: Connection) -> Check:
    row = conn.execute(
        text(
            """
            SELECT (SELECT count(*) FROM commands WHERE status = 'recorded'),
                   (SELECT count(*) FROM commands WHERE status = 'scheduled' AND not_before <= clock_timestamp()),
                   (SELECT count(*) FROM holds WHERE status IN ('pending', 'reallocating')),
                   (SELECT count(*) FROM holds WHERE status = 'reserved' AND expires_at <= clock_timestamp())
            """
        )
    ).one()
    names = (
        "commands recorded",
        "scheduled commands due",
        "holds pending/reallocating",
        "holds reserved past expiry",
    )
    detail = [f"{name}: {n}" for name, n in zip(names, row, strict=True) if n]
    return Check("unsettled after the drain", sum(row), not detail, detail)


def _about_a_resend(problem: str) -> bool:
    return problem.startswith("resend of") or "IdempotencyConflict" in problem


def check_resends(journal: Journal) -> Check:
    bad = [p for p in journal.problems if _about_a_resend(p)]
    return Check("resends answered as the first send", len(bad), not bad, bad[:20])


def check_gave_up(journal: Journal) -> Check:
    gave_up = [p for p in journal.problems if not _about_a_resend(p)]
    return Check("producer calls failed for good", len(gave_up), not gave_up, gave_up[:20])


def check_exits(fleet: Fleet) -> Check:
    exits = [f"{e['role']} pid {e['pid']} exited {e['returncode']}; log {e['log']}" for e in fleet.exits]
    return Check("processes exited on their own", len(exits), not exits, exits)


def check_applied_twice(conn: Connection) -> Check:
    doubled = conn.execute(
        text(
            "SELECT command_seq, hold_id::text, line_no, kind, count(*) FROM movements "
            "WHERE hold_id IS NOT NULL GROUP BY 1, 2, 3, 4 HAVING count(*) > 1"
        )
    ).all()
    detail = [
        f"command {seq} wrote {n} '{kind}' rows for {hold}:{line}" for seq, hold, line, kind, n in doubled
    ]
    moved = conn.execute(
        text(
            "SELECT hold_id::text, line_no, kind, count(*) FROM movements WHERE hold_id IS NOT NULL GROUP BY 1, 2, 3"
        )
    ).all()
    commands: dict[tuple[str, int], list[str]] = {}
    for hold, line, kind in conn.execute(
        text(
            "SELECT payload->>'hold_id', (payload->>'line_no')::int, kind FROM commands "
            "WHERE (kind LIKE 'line.%' OR kind = 'stock.return') AND status = 'applied'"
        )
    ):
        commands.setdefault((hold, line), []).append(kind)
    for hold, line, kind, n in moved:
        sources = MOVEMENT_SOURCES.get(kind, set())
        explained = sum(
            1 for k in commands.get((hold, line), []) if k in sources or k not in KNOWN_LINE_COMMANDS
        )
        if n > explained:
            detail.append(
                f"{hold}:{line} has {n} '{kind}' rows, {explained} line command(s) could write them"
            )
    # The warehouse's commands: one row of a kind per balance (a transfer moves two balances, a
    # transfer's receipt writes its arrival and its shortfall as two kinds).
    detail += [
        f"command {seq} wrote {n} '{kind}' rows on balance ({warehouse}, {lot})"
        for seq, warehouse, lot, kind, n in conn.execute(
            text(
                "SELECT command_seq, warehouse_id, lot_id, kind, count(*) FROM movements "
                "WHERE hold_id IS NULL GROUP BY 1, 2, 3, 4 HAVING count(*) > 1"
            )
        )
    ]
    return Check("applied twice", len(detail), not detail, detail[:20])


def check_expired_early(conn: Connection) -> Check:
    rows = conn.execute(
        text(
            """
            SELECT h.id::text, 'hold.expire applied ' || (h.expires_at - e.applied_at)::text || ' early'
            FROM holds h JOIN commands e ON e.idempotency_key = 'hold.expire:' || h.id::text
            WHERE e.status = 'applied' AND e.applied_at < h.expires_at AND e.result->>'outcome' = 'expired'
            UNION ALL
            SELECT DISTINCT h.id::text, 'expiry movement written before expires_at'
            FROM holds h JOIN movements m ON m.hold_id = h.id
            WHERE m.kind = 'expiry' AND m.created_at < h.expires_at
            """
        )
    ).all()
    detail = [f"{hold}: {why}" for hold, why in rows]
    return Check("holds expired before expires_at", len({h for h, _ in rows}), not rows, detail[:20])


@dataclass(frozen=True, slots=True)
class Outcome:
    """A timed payment or release, with what became of its hold."""

    ack: Ack
    in_time: bool
    recorded_vs_expiry_ms: float
    hold_status: str
    expiry_moves: bool

    @property
    def honoured(self) -> bool:
        """Recorded before expires_at: the command won, the hold never expired."""
        wanted = ("confirmed", "refunded") if self.ack.kind == "paid" else ("released",)
        return self.hold_status in wanted and not self.expiry_moves

    @property
    def expired_first(self) -> bool:
        """Recorded at or after expires_at: the hold was expired first, then the command met it."""
        if self.ack.kind == "paid":
            return self.expiry_moves and self.hold_status in ("confirmed", "paid_without_stock", "refunded")
        return self.expiry_moves and self.hold_status == "expired"


def timed_outcomes(conn: Connection, acks: list[Ack]) -> list[Outcome]:
    """Payments and releases sent at a planned moment to a hold the producer saw reserved."""
    timed = {a.key: a for a in acks if a.kind in ACTIONS and a.bucket is not None and a.seen == "reserved"}
    rows = conn.execute(
        text(
            """
            SELECT c.idempotency_key, c.recorded_at < h.expires_at,
                   extract(epoch FROM c.recorded_at - h.expires_at) * 1000, h.status,
                   EXISTS (SELECT 1 FROM movements m WHERE m.hold_id = h.id AND m.kind = 'expiry')
            FROM commands c JOIN holds h ON h.id = (c.payload->>'hold_id')::uuid
            WHERE c.idempotency_key = ANY(CAST(:keys AS text[]))
            """
        ),
        {"keys": sorted(timed)},
    ).all()
    return [
        Outcome(timed[key], bool(ok), round(float(ms), 1), status, bool(moves))
        for key, ok, ms, status, moves in rows
    ]


def check_timed(outcomes: list[Outcome]) -> list[Check]:
    checks = []
    for label, kinds in (("payments", ("paid",)), ("releases / failed payments", ("release", "failed"))):
        mine = [o for o in outcomes if o.ack.kind in kinds]
        in_time = [o for o in mine if o.in_time]
        broken = [o for o in in_time if not o.honoured]
        checks.append(_share_check(f"in-time {label} honoured", in_time, broken))
        late = [o for o in mine if not o.in_time]
        wrong = [o for o in late if not o.expired_first]
        checks.append(_share_check(f"late {label} expire the hold first", late, wrong))
    return checks


def _share_check(name: str, cases: list[Outcome], broken: list[Outcome]) -> Check:
    share = 100.0 if not cases else round(100 * (len(cases) - len(broken)) / len(cases), 2)
    detail = [
        f"{o.ack.key} ({o.ack.bucket}, recorded {o.recorded_vs_expiry_ms:+.1f} ms from expires_at): hold "
        f"{o.ack.hold_id} ended {o.hold_status}{', with expiry movements' if o.expiry_moves else ''}"
        for o in broken
    ]
    return Check(name, f"{share}% of {len(cases)}", not broken, detail[:20])


def check_oversold(conn: Connection) -> Check:
    n = _scalar(
        conn,
        "SELECT count(*) FROM stock_balances WHERE least(on_hand, reserved, in_transit, damaged, quarantine) < 0 "
        "OR reserved > on_hand OR reserved + damaged + quarantine > on_hand",
    )
    return Check("oversold balance rows (a bucket < 0, reserved or unavailable > on_hand)", n, n == 0)


def check_dead(conn: Connection) -> Check:
    n = _scalar(conn, "SELECT count(*) FROM commands WHERE status = 'dead'")
    return Check("dead letters", n, n == 0)


def check_reconcile(env: dict[str, str]) -> Check:
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "reconcile"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    return Check("tessera reconcile", f"exit {done.returncode}", done.returncode == 0, lines[:20])


def check_faults(faults: list[Fault], per_kind: int) -> Check:
    done = Counter(f.kind for f in faults if f.started is not None)
    detail = [f"{kind}: {done[kind]} of {per_kind}" for kind in FAULT_KINDS if done[kind] < per_kind]
    detail += [f"{f.kind} at {f.planned_s}s not verified: {f.detail}" for f in faults if not f.verified]
    return Check(
        "faults injected and verified",
        f"{sum(f.verified for f in faults)} of {len(faults)}",
        not detail,
        detail,
    )


def expiry_lateness(conn: Connection) -> list[float]:
    rows = conn.execute(
        text(
            "SELECT extract(epoch FROM e.applied_at - h.expires_at) FROM holds h "
            "JOIN commands e ON e.idempotency_key = 'hold.expire:' || h.id::text "
            "WHERE h.status = 'expired' AND e.status = 'applied'"
        )
    ).scalars()
    return [float(s) for s in rows]

"""Chaos soak: checkout traffic against real workers while their processes and servers are faulted.

    python -m bench.chaos --seconds 90 --seed 1          # ~2 min in all; exit 1 if a check fails
    python -m bench.chaos --seconds 30 --seed 7 --keep   # keep the data directory and the logs

What it does:

1. Starts servers of its own in a temporary directory: a PostgreSQL from the `pgserver` package's
   binaries (initdb, then `pg_ctl start` listening on 127.0.0.1 on a free port, its socket in the
   data directory; as root both run as the system user `pgserver`, as pgserver itself does, since
   PostgreSQL refuses to run as root) and a `redis-server` on a free port of 127.0.0.1 with no
   persistence (`--save "" --appendonly no`). The soak owns its servers because it faults them: a
   FLUSHALL or a PostgreSQL restart on the shared 5432 / 6379 would wreck everybody else's tests and
   benches. The database is migrated with `db.migrate.upgrade`. Everything is stopped and deleted
   at the end, also on Ctrl-C, SIGTERM or an error (`--keep` keeps the directory: data and logs).
2. Starts `python -m ops.cli worker --name w1` and `w2`, both serving every shard (the leases decide
   which one applies; the other stands by and takes over), and `python -m ops.cli scheduler`, all
   configured by TESSERA_* variables (printed at the start). A process that exits on its own is
   restarted and reported.
3. Seeds warehouses and 20 products (16 with plenty of stock, 4 scarce, so that holds are rejected
   and payments after expiry end `paid_without_stock`), then runs `--producers` checkout threads
   through one `producers.StockClient`: holds of 1-3 lines in both modes with TTLs of 2-6 s, and for
   most of them a payment ("paid", sometimes "failed") or a release, sent at a moment drawn around
   the hold's `expires_at` (read from the hold's answer; the send time is put on the database's
   clock, whose offset from this machine's is measured once at the start): well before it
   (-1.2..-0.5 s), just before (-300..-20 ms), right at it (±10 ms), just after (+20..+500 ms), or
   never (the hold expires). Some confirmed holds are refunded, some rejected ones paid anyway, some
   keys sent twice (the resend must return the same hold / command); a receipt arrives every second.
   Beside them a warehouse thread (`operations`) runs an operation every 0.3 s: transfers between the
   two warehouses (received whole, short, with a damaged piece, or called back), counts a couple of
   pieces either side of on_hand (below what is held at times), adjustments (large ones approved or
   rejected by a second actor), damage, quarantined receipts (released or written off) and returns
   of one piece of a confirmed hold (racing its refund, when it has one).
   Every ACKNOWLEDGED command (the call returned a ticket) is recorded: key, kind, hold, the send and
   ack times on the database clock. A call that raises (a server was down) is retried with the same
   key, as a client does, for up to a minute.
4. Meanwhile the main thread injects faults at moments drawn from `random.Random(seed)`: each kind
   `--faults-per-kind` times (3 by default from 75 s on: 18 faults in a 90 s run), shuffled and
   spread over the run (one slot each, a random moment in its first half), one after another (a
   fault that overruns its slot delays the next):
   kill_worker (SIGKILL of the worker holding most leases, restarted 0.5-2 s later), kill_scheduler
   (SIGKILL, restarted 0.5-2 s later), stop_worker (SIGSTOP of the worker holding most leases for
   the lease TTL + 0.5-2 s, then SIGCONT), flush_redis (FLUSHALL), restart_postgres
   (`pg_ctl restart -m fast`), third_worker (a worker `w3` on the same shards for 2-4 s, then
   SIGTERM). Each fault records its start and end (database clock) and whether it really happened
   (the process died with -9, /proc showed it stopped, Redis had keys, the postmaster's pid
   changed, the third worker was running).
5. Stops producing, drains (bounded by `--drain-timeout`: until no command is 'recorded', no
   'scheduled' one is due, no hold is pending or reallocating, and every hold's `expires_at` has
   passed), checks, prints the tables, writes `bench/results/chaos.json` (or `--results-dir`) and
   exits 1 if any check failed.

The PostgreSQL restart is `pg_ctl restart -m fast -w` on the soak's own data directory, as the user
that owns it: the postmaster disconnects every session (their open transactions roll back), shuts
down cleanly, starts again on the same port and `-w` returns once it accepts connections (~0.2 s
here). Everybody's connections are then broken: producers see their calls raise and resend them
with the same key, the writers retry their batch in place, pools reconnect.

Recovery time of a fault: from its mark (the injection; for stop_worker and third_worker, its end:
SIGCONT or SIGTERM) until both (a) no command recorded before the mark is still 'recorded' and no
'scheduled' command due before the mark is unapplied, and (b) the fault's probes are applied: at
the mark a thread records a one-piece receipt on every shard (products PROBE-n, one per shard;
resent with the same keys while PostgreSQL is down). Polled every 50 ms; the time is the database
clock's at the first poll that sees both. (a) alone reads ~0 whenever nothing happened to be in
flight at the mark, however long later commands wait for a lease; (b) is how long a shard given
work at the mark stays unserved. Both include the ordinary latency of the moment (a few ms, and
expiries falling due just before the mark: delayed doorbell or sweep). p50 and max per kind.

The checks (each must hold; any failure → exit 1):
  - lost: acknowledged commands missing from the inbox or not 'applied', acknowledged holds missing;
  - unsettled after the drain: commands still recorded or due, holds pending or reallocating, holds
    still reserved after their expiry;
  - resends: a resent key returned another hold, or was refused;
  - applied twice: a (command, hold, line, movement kind) with two ledger rows, or a (hold, line,
    movement kind) with more ledger rows than line commands (or returns) that could have written
    them, or a warehouse command with two rows of a kind on one balance;
  - expired early: a `hold.expire:<id>` that expired its hold before `expires_at`, or an 'expiry'
    movement written before it;
  - in-time payments / releases honoured: a 'paid' (release, failed payment) acknowledged for a hold
    the producer saw 'reserved', whose inbox row was recorded before `expires_at`, ends with the
    hold confirmed or refunded (released) and no 'expiry' movement for the hold: 100 %;
  - late payments / releases expire first: the same recorded at or after `expires_at` find the hold
    expired first (an 'expiry' movement; then confirmed / paid_without_stock / refunded after a
    re-reservation for a payment, still 'expired' for a release): 100 %;
  - oversold: a stock_balances row with a bucket < 0, reserved > on_hand, or reserved + damaged +
    quarantine > on_hand;
  - `python -m ops.cli reconcile` exits 0;
  - dead letters: commands with status 'dead' (0 when the status does not exist);
  - producer calls that failed for good (after a minute of retries, or refused);
  - processes that exited on their own;
  - faults: every kind injected as often as planned, and each one verified.
Goals printed against (not checks): expiry lateness (the `hold.expire` command's applied_at −
expires_at, holds that ended 'expired') p99 <= 2 s and max <= lease TTL + sweep interval + 1 s.

The package: `servers` (its PostgreSQL and Redis), `clock` (the database's clock), `journal` (the
acknowledged commands, and sending through faults), `traffic` (the checkout plans, the producer
threads, the catalogue), `operations` (the warehouse's thread), `processes` (workers, scheduler, leases), `faults` (plan, injector, probes,
recovery), `checks` (the drain and the checks), `report` (the tables), `__main__` (the run).
"""

from bench.chaos.faults import FAULT_KINDS

__all__ = ["FAULT_KINDS"]

"""Every Prometheus metric of Tessera, in one module the API and the workers both import.

The writer records per batch, not per command, where it can (a batch's kinds and outcomes are
counted first, then added). The API runs in prometheus_client's multi-process mode when
`tessera api --workers N` sets PROMETHEUS_MULTIPROC_DIR; a worker serves its own `/metrics` on
`tessera worker --metrics-port`.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- the HTTP API ----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("tessera_http_requests_total", "HTTP requests", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "tessera_http_request_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY_BUCKETS
)

# -- the shard writers -----------------------------------------------------------------------------
COMMANDS_APPLIED = Counter(
    "tessera_commands_applied_total", "Commands applied, by kind and outcome", ["kind", "outcome"]
)
BATCH_COMMANDS = Histogram(
    "tessera_batch_commands",
    "Commands per writer transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
BATCH_SECONDS = Histogram(
    "tessera_batch_seconds", "A batch's time, from its claim to its commit", buckets=LATENCY_BUCKETS
)
COMMAND_LAG = Histogram(
    "tessera_command_lag_seconds",
    "From a command's recording to its application (scheduled expiries are not counted)",
    buckets=LATENCY_BUCKETS,
)
LEASE_CHANGES = Counter(
    "tessera_lease_changes_total", "Shard leases acquired, lost (fenced or expired) and released", ["change"]
)

# -- the inbox, refreshed by each worker for the shards it holds -----------------------------------
INBOX_PENDING = Gauge("tessera_inbox_pending", "Commands waiting to be applied", ["shard"])
INBOX_OLDEST_SECONDS = Gauge(
    "tessera_inbox_oldest_pending_seconds", "Age of the oldest waiting command", ["shard"]
)
DEAD_LETTERS = Gauge("tessera_dead_letters", "Parked commands (dead letters)", ["shard"])
HOLDS = Gauge("tessera_holds", "Holds by status", ["status"])


def record_batch(
    outcomes: Iterable[tuple[str, str]], lags: Iterable[float], seconds: float, size: int
) -> None:
    """One committed batch: its (kind, outcome) pairs, its commands' lags, its time and size."""
    for (kind, outcome), count in Tally(outcomes).items():
        COMMANDS_APPLIED.labels(kind, outcome).inc(count)
    for lag in lags:
        COMMAND_LAG.observe(max(lag, 0.0))
    BATCH_SECONDS.observe(seconds)
    BATCH_COMMANDS.observe(size)


def record_inbox(
    shards: Iterable[int],
    pending: Mapping[int, int],
    oldest_seconds: Mapping[int, float | None],
    dead: Mapping[int, int],
) -> None:
    for shard in shards:
        label = str(shard)
        INBOX_PENDING.labels(label).set(pending.get(shard, 0))
        INBOX_OLDEST_SECONDS.labels(label).set(oldest_seconds.get(shard) or 0.0)
        DEAD_LETTERS.labels(label).set(dead.get(shard, 0))


def record_holds(by_status: Mapping[str, int]) -> None:
    for status, count in by_status.items():
        HOLDS.labels(status).set(count)

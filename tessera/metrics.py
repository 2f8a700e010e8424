"""Every Prometheus metric of Tessera, in one module the API and the workers both import.

The writer records per batch, not per command, where it can (a batch's kinds and outcomes are
counted first, then added). The API runs in prometheus_client's multi-process mode when
`tessera api --workers N` sets PROMETHEUS_MULTIPROC_DIR; a worker serves its own `/metrics` on
`tessera worker --metrics-port`.

Each number has one exporter, so that Prometheus can add them up across processes: a shard's inbox
gauges come from the worker holding its lease (dropped by a worker that loses it), the holds by
status from the API, counted when it is scraped.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping

import structlog
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tessera.logs import first_line

log = structlog.get_logger("tessera.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- the HTTP API ----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("tessera_http_requests_total", "HTTP requests", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "tessera_http_request_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY_BUCKETS
)
HOLDS_HANDED = Counter(
    "tessera_holds_handed_total",
    "Waiting callers' holds by how they were recorded: decided by the writer they were handed to, or "
    "recorded by the API (not_taken: the writer left it; unanswered: no answer in time; refused: Redis "
    "refused it; not_handed: its products not read yet, or lines on several shards)",
    ["outcome"],
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
    "tessera_batch_seconds",
    "A batch's time from its claimed commands to its commit: decisions, writes, commit",
    buckets=LATENCY_BUCKETS,
)
COMMAND_LAG = Histogram(
    "tessera_command_lag_seconds",
    "From a command's recording to its application (scheduled expiries are not counted)",
    buckets=LATENCY_BUCKETS,
)
LEASE_CHANGES = Counter(
    "tessera_lease_changes_total",
    "Shard leases acquired (free), taken over (from a worker whose connection is gone), lost (expired), "
    "fenced (a newer epoch applied) and released (on stop)",
    ["change"],
)

# -- the inbox, refreshed by each worker for the shards it holds -----------------------------------
INBOX_PENDING = Gauge("tessera_inbox_pending", "Commands waiting to be applied", ["shard"])
INBOX_OLDEST_SECONDS = Gauge(
    "tessera_inbox_oldest_pending_seconds", "Age of the oldest waiting command", ["shard"]
)
DEAD_LETTERS = Gauge("tessera_dead_letters", "Parked commands (dead letters)", ["shard"])
SHARD_GAUGES = (INBOX_PENDING, INBOX_OLDEST_SECONDS, DEAD_LETTERS)


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
    pending: Mapping[int, int],
    oldest_seconds: Mapping[int, float | None],
    dead: Mapping[int, int],
    *,
    not_held: Iterable[int],
) -> None:
    """The inbox of the shards this worker holds (the keys of `pending`); the shards it does not
    hold any more leave its /metrics (their new holder reports them)."""
    for shard, count in pending.items():
        label = str(shard)
        INBOX_PENDING.labels(label).set(count)
        INBOX_OLDEST_SECONDS.labels(label).set(oldest_seconds.get(shard) or 0.0)
        DEAD_LETTERS.labels(label).set(dead.get(shard, 0))
    for shard in not_held:
        for gauge in SHARD_GAUGES:
            gauge.remove(str(shard))


class HoldsByStatus(Collector):
    """`tessera_holds{status}`, counted when /metrics is scraped: one statement per scrape, by the
    API only (no worker scans the holds on a timer, and scaled workers do not report it N times).
    When the count fails (PostgreSQL away), the scrape goes on without it."""

    def __init__(self, count: Callable[[], Mapping[str, int]]) -> None:
        self.count = count

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.count()
        except Exception as error:
            log.warning("metrics.holds_unavailable", error=first_line(error))
            return
        family = GaugeMetricFamily("tessera_holds", "Holds by status", labels=["status"])
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family

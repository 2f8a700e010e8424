"""Shard leases: exactly one consumer per shard, enforced, not assumed.

A worker holds a shard while its Redis lease key lives (renewed every third of the TTL). The key
names the Redis connection the holder keeps for its leases: when that connection is gone, the
holder is dead (kill -9, a crash: the kernel closes its sockets at once) and a standby takes the
shard without waiting for the TTL. A holder that is merely stalled (SIGSTOP, a long pause) keeps
its connection, so only the TTL takes its shards. Each
acquisition takes a new, higher epoch; the writer proves that epoch in Postgres in every apply
transaction (see ``db.claims.send_claim``), so a worker that stalled past its lease, or a
second worker started by mistake, is fenced out even if it still believes it owns the shard.
Epochs never go back, even if Redis loses its memory: acquisition starts above the newest epoch
Postgres has seen.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from redis import Redis
from redis.exceptions import ResponseError

log = structlog.get_logger("tessera.lease")

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch .. '|' .. ARGV[4], 'PX', ARGV[2])
return epoch
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Release and steal are the same compare-and-delete: the key goes only if it still holds the value
# the caller saw (its own token, or a dead holder's).
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(slots=True)
class ShardLease:
    shard: int
    epoch: int
    holder: str
    connection_id: int
    """The Redis client id of the connection the holder keeps: its liveness, as others see it."""
    valid_until: float
    """Monotonic time after which this worker must assume the lease is gone."""

    @property
    def token(self) -> str:
        return f"{self.holder}|{self.epoch}|{self.connection_id}"

    def is_valid(self) -> bool:
        return time.monotonic() < self.valid_until


class LeaseManager:
    """Acquires, renews and releases shard leases for one worker."""

    def __init__(self, redis_client: Redis, namespace: str, holder: str, ttl_seconds: float) -> None:
        self.redis = redis_client
        self.namespace = namespace
        self.holder = holder
        self.ttl_ms = int(ttl_seconds * 1000)
        # One connection of its own, kept for the process's life: its client id goes into every
        # lease this worker takes, and its closing tells the others this worker is gone.
        self._own = Redis(connection_pool=redis_client.connection_pool, single_connection_client=True)
        self._acquire = self._own.register_script(_ACQUIRE)
        self._renew = self._own.register_script(_RENEW)
        self._delete_if = redis_client.register_script(_DELETE_IF)
        self._liveness_known = True

    def _keys(self, shard: int) -> list[str]:
        return [lease_key(self.namespace, shard), f"{self.namespace}:lease-epoch:{shard}"]

    def _valid_until(self, started: float) -> float:
        # Keep a margin: stop applying well before Redis would hand the shard to someone else.
        return started + self.ttl_ms / 1000 * 0.8

    def acquire(self, shard: int, epoch_floor: int) -> ShardLease | None:
        started = time.monotonic()
        connection_id = self.connection_id()
        epoch = self._acquire(
            keys=self._keys(shard), args=[self.holder, self.ttl_ms, epoch_floor, connection_id]
        )
        if epoch is None:
            return None
        return ShardLease(shard, int(epoch), self.holder, connection_id, self._valid_until(started))

    def connection_id(self) -> int:
        """The client id of this worker's own connection; 0 where CLIENT is disabled (then only
        the TTL can free its leases)."""
        try:
            return int(self._own.client_id())
        except ResponseError:
            return 0

    def renew(self, lease: ShardLease) -> bool:
        started = time.monotonic()
        if self._renew(keys=self._keys(lease.shard)[:1], args=[lease.token, self.ttl_ms]):
            lease.valid_until = self._valid_until(started)
            return True
        lease.valid_until = 0.0
        return False

    def release(self, lease: ShardLease) -> None:
        lease.valid_until = 0.0
        self._delete_if(keys=self._keys(lease.shard)[:1], args=[lease.token])

    def close(self) -> None:
        self._own.close()

    def holder_of(self, shard: int) -> str | None:
        return self.holders([shard])[0]

    def holders(self, shards: list[int]) -> list[str | None]:
        """Each shard's lease value, ``holder|epoch|connection`` (None: nobody), in one round trip."""
        values = self.redis.mget([self._keys(shard)[0] for shard in shards])
        return [value.decode() if isinstance(value, bytes) else value for value in values]

    def vacant(self, shards: list[int]) -> dict[int, str | None]:
        """The shards whose lease is free (→ None), or was held by a worker whose connection is gone
        (→ that lease's value: those leases are deleted here, so that the next `acquire` can take
        them), in shard order."""
        values = self.holders(shards)
        vacant: dict[int, str | None] = {
            shard: None for shard, value in zip(shards, values, strict=True) if value is None
        }
        held = {shard: value for shard, value in zip(shards, values, strict=True) if value is not None}
        for shard in self._of_dead_holders(held):
            if self._delete_if(keys=self._keys(shard)[:1], args=[held[shard]]):
                vacant[shard] = held[shard]
        return dict(sorted(vacant.items()))

    def _of_dead_holders(self, held: dict[int, str]) -> list[int]:
        connections = {shard: lease_connection(value) for shard, value in held.items()}
        if not self._liveness_known:
            return []
        alive = live_connections(self.redis, [c for c in connections.values() if c is not None])
        if alive is None:
            self._liveness_known = False
            return []
        dead = [shard for shard, c in connections.items() if c is not None and c not in alive]
        for shard in dead:
            log.info("lease.holder_gone", shard=shard, lease=held[shard])
        return dead


def lease_key(namespace: str, shard: int) -> str:
    """The Redis key of a shard's lease; its value is ``holder|epoch|connection``."""
    return f"{namespace}:lease:{shard}"


def lease_holder(value: str) -> tuple[str, int]:
    """A lease value's holder and epoch."""
    holder, _, rest = value.partition("|")
    epoch = rest.partition("|")[0]
    return holder, int(epoch) if epoch.isdecimal() else 0


def lease_connection(value: str) -> int | None:
    """The holder's connection id in a lease value (None in a value written before leases named
    one, or by a holder that could not learn its id)."""
    parts = value.split("|")
    return int(parts[2]) if len(parts) == 3 and parts[2].isdecimal() and parts[2] != "0" else None


def live_connections(redis: Redis, connection_ids: Iterable[int]) -> set[int] | None:
    """Which of these Redis client ids are still connected, in one round trip; None where CLIENT
    is disabled (a managed Redis): then only a lease's TTL tells that its holder is gone."""
    wanted = sorted({str(c) for c in connection_ids})
    if not wanted:
        return set()
    try:
        return {int(c["id"]) for c in redis.client_list(client_id=wanted)}
    except ResponseError as error:
        log.warning("lease.liveness_unknown", error=str(error))
        return None

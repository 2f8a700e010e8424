"""Shard leases: exactly one consumer per shard, enforced, not assumed.

A worker holds a shard while its Redis lease key lives (renewed every third of the TTL). Each
acquisition takes a new, higher epoch; the writer proves that epoch in Postgres in every apply
transaction (see ``db.repository.claim_batch``), so a worker that stalled past its lease, or a
second worker started by mistake, is fenced out even if it still believes it owns the shard.
Epochs never go back, even if Redis loses its memory: acquisition starts above the newest epoch
Postgres has seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch, 'PX', ARGV[2])
return epoch
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(slots=True)
class ShardLease:
    shard: int
    epoch: int
    holder: str
    valid_until: float
    """Monotonic time after which this worker must assume the lease is gone."""

    @property
    def token(self) -> str:
        return f"{self.holder}|{self.epoch}"

    def is_valid(self) -> bool:
        return time.monotonic() < self.valid_until


class LeaseManager:
    """Acquires, renews and releases shard leases for one worker."""

    def __init__(self, redis_client: Redis, namespace: str, holder: str, ttl_seconds: float) -> None:
        self.redis = redis_client
        self.namespace = namespace
        self.holder = holder
        self.ttl_ms = int(ttl_seconds * 1000)
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._renew = redis_client.register_script(_RENEW)
        self._release = redis_client.register_script(_RELEASE)

    def _keys(self, shard: int) -> list[str]:
        return [f"{self.namespace}:lease:{shard}", f"{self.namespace}:lease-epoch:{shard}"]

    def _valid_until(self, started: float) -> float:
        # Keep a margin: stop applying well before Redis would hand the shard to someone else.
        return started + self.ttl_ms / 1000 * 0.8

    def acquire(self, shard: int, epoch_floor: int) -> ShardLease | None:
        started = time.monotonic()
        epoch = self._acquire(keys=self._keys(shard), args=[self.holder, self.ttl_ms, epoch_floor])
        if epoch is None:
            return None
        return ShardLease(shard, int(epoch), self.holder, self._valid_until(started))

    def renew(self, lease: ShardLease) -> bool:
        started = time.monotonic()
        if self._renew(keys=self._keys(lease.shard)[:1], args=[lease.token, self.ttl_ms]):
            lease.valid_until = self._valid_until(started)
            return True
        lease.valid_until = 0.0
        return False

    def release(self, lease: ShardLease) -> None:
        lease.valid_until = 0.0
        self._release(keys=self._keys(lease.shard)[:1], args=[lease.token])

    def holder_of(self, shard: int) -> str | None:
        return self.holders([shard])[0]

    def holders(self, shards: list[int]) -> list[str | None]:
        """Who holds each shard's lease (None: nobody), in one round trip."""
        values = self.redis.mget([self._keys(shard)[0] for shard in shards])
        return [value.decode() if isinstance(value, bytes) else value for value in values]

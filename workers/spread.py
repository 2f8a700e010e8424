"""Spreading shards over the workers that serve them (`tessera worker --spread`).

Without it, the first worker to start takes every free lease and the others stand by, ready to take
over: right for a standby, not for `docker compose up --scale worker=N`, whose replicas all serve
every shard and should share the work. With it, the workers that serve the same shards register in
a Redis hash of their own (``{namespace}:workers:{shards}``, e.g. ``tessera:workers:0-15``), each
entry renewed with the leases and saying how many shards its worker holds. They even out:

  - a worker holding two or more shards more than a peer releases one, once per look of its lease
    keeper (the peer takes it on its next look);
  - a free shard is taken by the workers holding the fewest: a worker leaves it to a peer that holds
    fewer than itself (so a shard just released goes to the peer it was released for).

16 shards over 3 workers end as 6, 5 and 5. A peer whose Redis connection is gone (kill -9) is not
live, as for leases: the others take its shards at once. One that stalls drops out when its entry
lapses, with its leases. Leases still decide who applies: the spread only chooses which worker asks
for which lease.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from redis import Redis

from workers.lease import live_connections

# Register (or renew) this worker's entry, drop the lapsed ones, return the others; the time is the
# Redis server's, so that the workers' clocks need not agree.
_REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[3])) .. '|' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local entries = redis.call('HGETALL', KEYS[1])
local others = {}
for i = 1, #entries, 2 do
  local lapses = tonumber(string.match(entries[i + 1], '^(%d+)|'))
  if lapses == nil or lapses < now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif entries[i] ~= ARGV[1] then
    table.insert(others, entries[i])
    table.insert(others, entries[i + 1])
  end
end
return others
"""


def shard_ranges(shards: Sequence[int]) -> str:
    """Shard numbers as ranges, the way `--shards` takes them: [0, 1, 2, 5] → "0-2,5"."""
    runs: list[list[int]] = []  # [first, last]
    for shard in sorted(shards):
        if runs and runs[-1][1] == shard - 1:
            runs[-1][1] = shard
        else:
            runs.append([shard, shard])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)


class ShardSpread:
    """One worker's place among the workers that serve the same shards.

    Parameters:
      redis_client: the workers' Redis.
      namespace: the Redis namespace.
      name: this worker's name (its entry's field).
      shards: the shards it serves (the entry's hash is named after them).
      ttl_seconds: how long an entry lives unrenewed (the lease TTL).
      connection_id: the client id of the Redis connection the worker keeps for its leases.
    """

    def __init__(
        self,
        redis_client: Redis,
        namespace: str,
        name: str,
        shards: Sequence[int],
        ttl_seconds: float,
        connection_id: Callable[[], int],
    ) -> None:
        self.redis = redis_client
        self.key = f"{namespace}:workers:{shard_ranges(shards)}"
        self.name = name
        self.shards = len(shards)
        self.ttl_ms = int(ttl_seconds * 1000)
        self.connection_id = connection_id
        self.peers: dict[str, int] = {}
        """Each live peer's held shards, as it last reported them."""
        self._report = redis_client.register_script(_REPORT)

    def report(self, held: int) -> None:
        """Say how many shards this worker holds; learn the live peers and theirs."""
        entries = self._report(
            keys=[self.key], args=[self.name, f"{held}|{self.connection_id()}", self.ttl_ms]
        )
        peers: dict[str, tuple[int, int]] = {}
        for name, value in zip(entries[::2], entries[1::2], strict=True):
            _, held_text, connection = _text(value).split("|")
            peers[_text(name)] = (int(held_text), int(connection))
        alive = live_connections(self.redis, [c for _, c in peers.values() if c])
        self.peers = {
            name: count
            for name, (count, connection) in peers.items()
            if alive is None or not connection or connection in alive
        }

    def may_take(self, held: int) -> bool:
        """Whether to take a free shard now: no live peer holds fewer."""
        return all(count >= held for count in self.peers.values())

    def over(self, held: int) -> bool:
        """Whether to release a shard: a peer holds two or more fewer."""
        return any(held - count >= 2 for count in self.peers.values())

    def leave(self) -> None:
        """Take this worker's entry out (on stop: the peers take its shards without waiting)."""
        self.redis.hdel(self.key, self.name)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

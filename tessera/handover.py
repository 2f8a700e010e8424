"""Handing a waiting caller's hold to its shard's writer, which records and decides it in one
transaction (DESIGN.md: a writer may record what it is handed, in its own transaction).

The API converts the request as its recorder would, pushes the rows onto the shard's list
(`{namespace}:handed:{shard}`) and nudges the shard. The writer takes what the lists of its shards
hold before each claim, records it first thing in its batch transaction and decides it in the same
batch: the API's own statement and commit, and the hand-over between the two transactions, are
saved. Redis keeps nothing durably: a hold that is not answered by its deadline is recorded by the
API itself, and the idempotency key makes the two recordings one (the second finds the first).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript

NOT_TAKEN = b"0"
"""The answer to a handed hold that its writer did not record (its key was recorded before, or a
product changed): the API records it itself, at once."""

ROW_FIELDS = {"holds", "lines", "commands", "products", "warehouse_ids"}
"""The lists of `db.inbox.HoldRows`."""

LIST_TTL_SECONDS = 60
"""A list nobody takes from (its shard's writer gone) does not outlive its holds' deadlines by much."""

# Each list in KEYS gets its messages (ARGV: the lists' TTL in ms, the nudge channel and its
# message, then per list its count and messages), and the shards are nudged: one command.
_HAND = """
local at = 4
for _, key in ipairs(KEYS) do
    local count = tonumber(ARGV[at])
    redis.call('RPUSH', key, unpack(ARGV, at + 1, at + count))
    redis.call('PEXPIRE', key, ARGV[1])
    at = at + count + 1
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return at
"""

# Up to ARGV[1] messages from the lists named by KEYS, first list first: one round trip for all of
# a writer's shards.
_TAKE = """
local taken = {}
local room = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
    if room <= 0 then break end
    local popped = redis.call('LPOP', key, room)
    if popped then
        for _, message in ipairs(popped) do taken[#taken + 1] = message end
        room = room - #popped
    end
end
return taken
"""


@dataclass(frozen=True, slots=True)
class HandedHold:
    """One hold request, converted: the rows its recording writes (`db.inbox.HoldRows`, as a dict),
    the client its answer goes to, and the wall-clock time after which the API records it itself
    (a writer does not record it after that)."""

    hold_id: str
    key: str
    rows: dict[str, Any]
    reply_to: str
    until: float

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "hold_id": self.hold_id,
                "key": self.key,
                "rows": self.rows,
                "reply_to": self.reply_to,
                "until": self.until,
            },
            default=str,
        )

    @classmethod
    def decode(cls, message: bytes) -> HandedHold | None:
        """The hold, or None for a message that is not one (anyone may push onto a list)."""
        try:
            fields = orjson.loads(message)
            hold = cls(**fields)
        except (orjson.JSONDecodeError, TypeError):
            return None
        if not isinstance(hold.rows, dict) or set(hold.rows) != ROW_FIELDS:
            return None
        return hold

    def late(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.until


class HandedHolds:
    """The shards' lists of handed holds on Redis."""

    def __init__(self, redis_client: Redis, namespace: str) -> None:
        self.redis = redis_client
        self.namespace = namespace
        self._take = redis_client.register_script(_TAKE)
        self._hand_script: AsyncScript | None = None
        self._hand_client: AsyncRedis | None = None

    def key(self, shard: int) -> str:
        return f"{self.namespace}:handed:{shard}"

    async def hand(
        self, client: AsyncRedis, holds: Sequence[tuple[int, HandedHold]], nudge_channel: str
    ) -> None:
        """Push the holds onto their shards' lists and nudge those shards: one command."""
        by_shard: dict[int, list[bytes]] = {}
        for shard, hold in holds:
            by_shard.setdefault(shard, []).append(hold.encode())
        args: list[Any] = [LIST_TTL_SECONDS * 1000, nudge_channel, ",".join(map(str, sorted(by_shard)))]
        for messages in by_shard.values():
            args += [len(messages), *messages]
        if self._hand_script is None or self._hand_client is not client:
            # An AsyncScript loads the script again if Redis lost it (a restart).
            self._hand_script, self._hand_client = client.register_script(_HAND), client
        await self._hand_script(keys=[self.key(shard) for shard in by_shard], args=args)

    def take(self, shards: Iterable[int], limit: int) -> list[HandedHold]:
        """Up to `limit` holds from the shards' lists, each list in its order."""
        keys = [self.key(shard) for shard in shards]
        if not keys or limit <= 0:
            return []
        taken = (HandedHold.decode(message) for message in self._take(keys=keys, args=[limit]))
        return [hold for hold in taken if hold is not None]

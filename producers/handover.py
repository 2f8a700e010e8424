"""A waiting caller's hold, handed to its shard's writer (`tessera.handover`) instead of recorded here.

The hold's rows go to the shard's list on Redis, grouped with those of the requests that arrive in
the same turn of the event loop (one round trip), and the caller waits for the writer's answer. The
writer records and decides it in one transaction: this process spends no statement, no commit and
no wake-up chain on it. When the writer does not take it (the key was sent before, a product
changed: NOT_TAKEN), cannot be reached, or does not answer within the hand-over time, the hold is
recorded here as any other, under the same hold id: if the writer recorded it after all, that
recording is found and kept (the idempotency key is unique), and the hold is still this call's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import structlog
from redis.asyncio import Redis as AsyncRedis

from domain.results import HoldResult
from producers.hold_groups import HoldGroups
from producers.requests import HoldRequest
from tessera.answers import AnswerChannel
from tessera.handover import NOT_TAKEN, ROW_FIELDS, HandedHold, HandedHolds
from tessera.logs import first_line
from tessera.metrics import HOLDS_HANDED

log = structlog.get_logger("tessera.handover")


class HoldHandover:
    """Hands holds to their writers; records those the writers leave (see the module)."""

    def __init__(
        self,
        groups: HoldGroups,
        handed: HandedHolds,
        answers: AnswerChannel,
        *,
        connect: Callable[[], AsyncRedis],
        nudge_channel: str,
        reply_to: str,
    ) -> None:
        self.groups, self.handed, self.answers = groups, handed, answers
        self.connect, self.nudge_channel, self.reply_to = connect, nudge_channel, reply_to
        self._redis: AsyncRedis | None = None  # the event loop's, made on first use
        self._queued: list[tuple[int, HandedHold, asyncio.Future[bool]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def hold(
        self, request: HoldRequest, within: float, record_within: float
    ) -> tuple[str, bool, HoldResult | None]:
        """The hold's id, whether this call made it (False: a resend), and its answer if its writer
        decided it within `within` seconds (else None: it is recorded here, within `record_within`
        seconds or RecordingTimeout, and decided later)."""
        hold_id = str(uuid.uuid4())
        outcome = await self._handed(request, hold_id, within)
        if isinstance(outcome, HoldResult):
            HOLDS_HANDED.labels("decided").inc()
            return hold_id, True, outcome
        HOLDS_HANDED.labels(outcome).inc()
        recorded_id, fresh = await self.groups.record_async(request, record_within, hold_id=hold_id)
        return recorded_id, fresh, None

    async def _handed(self, request: HoldRequest, hold_id: str, within: float) -> HoldResult | str:
        """The writer's answer, or why there is none (see `tessera_holds_handed_total`)."""
        prepared = self.groups.handed_rows(request, hold_id)
        if prepared is None:
            return "not_handed"
        shard, rows = prepared
        hold = HandedHold(
            hold_id,
            request.idempotency_key,
            {name: getattr(rows, name) for name in ROW_FIELDS},
            self.reply_to,
            time.time() + within,
        )
        if not await self._hand(shard, hold, within):
            return "refused"
        answer = await self.answers.wait_async(hold_id, within)
        if answer is None or answer == b"1":
            return "unanswered"
        if answer == NOT_TAKEN:
            return "not_taken"
        return HoldResult.model_validate_json(answer)

    async def _hand(self, shard: int, hold: HandedHold, within: float) -> bool:
        """Push the hold with those that come while the previous group is on its way; False if
        Redis refused them, or took no delivery within `within` seconds (a Redis that stopped
        answering: the hold is recorded here, and its writer, should it take it after all, finds
        it late)."""
        loop = asyncio.get_running_loop()
        sent = loop.create_future()
        self._queued.append((shard, hold, sent))
        if self._sending is None or self._sending.done():
            self._sending = loop.create_task(self._send())
        expiry = loop.call_later(within, _given_up, sent)
        try:
            return await sent
        finally:
            expiry.cancel()

    async def _send(self) -> None:
        while self._queued:
            # A hold whose caller stopped waiting (`_hand`) is recorded by its API: not sent.
            group, self._queued = [queued for queued in self._queued if not queued[2].done()], []
            if not group:
                continue
            try:
                if self._redis is None:
                    self._redis = self.connect()
                await self.handed.hand(
                    self._redis, [(shard, hold) for shard, hold, _ in group], self.nudge_channel
                )
                handed = True
            except Exception as error:  # Redis away: each of these is recorded here
                log.warning("handover.error", holds=len(group), error=first_line(error))
                handed = False
            for _, _, sent in group:
                if not sent.done():
                    sent.set_result(handed)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.connection_pool.disconnect()
            self._redis = None


def _given_up(sent: asyncio.Future[bool]) -> None:
    if not sent.done():
        sent.set_result(False)

"""The kinds of command in the inbox, and which shard's writer applies each."""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Any

from domain.errors import UnknownCommandKind
from domain.states import LineAction


class HoldCommand(enum.StrEnum):
    """Hold-level commands, applied by the hold's home shard writer."""

    PLACE = "hold.place"  # recorded and fanned out by the producer in one transaction
    RELEASE = "hold.release"
    PAY = "hold.pay"
    EXPIRE = "hold.expire"
    # A line's answer, sent by its product's writer to the hold's home writer when that runs in
    # another process: only the home writer locks and writes the hold row, so writers of one
    # multi-line hold never wait for each other's row lock.
    LINE_ANSWERED = "hold.line_answered"


class StockCommand(enum.StrEnum):
    """Warehouse operations, applied by the product's shard writer (docs/warehouse.md)."""

    RECEIVE = "stock.receive"
    QUARANTINE_RELEASE = "stock.quarantine_release"
    DAMAGE = "stock.damage"
    WRITE_OFF = "stock.write_off"
    TRANSFER = "stock.transfer"
    TRANSFER_RECEIVE = "stock.transfer_receive"
    TRANSFER_CANCEL = "stock.transfer_cancel"
    COUNT = "stock.count"
    ADJUST = "stock.adjust"
    ADJUST_APPROVE = "stock.adjust_approve"
    ADJUST_REJECT = "stock.adjust_reject"
    RETURN = "stock.return"


CommandKind = HoldCommand | StockCommand | LineAction


_KINDS: dict[str, CommandKind] = {
    kind.value: kind for family in (HoldCommand, StockCommand, LineAction) for kind in family
}


def parse_kind(kind: str) -> CommandKind:
    # A dict, not each family tried in turn: a failed Enum lookup raises, and the writer parses
    # every command of every batch (a fifth of its decisions' time in the flash sale's profile).
    try:
        return _KINDS[kind]
    except KeyError:
        raise UnknownCommandKind(kind) from None


def stable_hash(text: str) -> int:
    """A hash that is the same in every process and release (Python's ``hash()`` is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def shard_of(key: str, shards: int) -> int:
    return stable_hash(key) % shards


def payload_digest(kind: str, payload: dict[str, Any]) -> str:
    """Fingerprint of a command, to tell a resend (same digest) from a reused key (another one).

    The standard library's json on purpose, not orjson like the statements' documents: digests
    recorded by earlier releases must match a resend's, and the two write some values differently
    (non-ASCII text, datetimes)."""
    canonical = json.dumps(
        {"kind": kind, "payload": payload}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


AGAIN = ":again"
"""The suffix of a line command's key when it is the second of its action to that line."""


def line_command_key(hold_id: str, line_no: int, action: LineAction, *, again: bool = False) -> str:
    """The key of a command a hold sends its line: the same command decided again (a redelivery)
    gets the same key and is recorded once."""
    return f"{action.value}:{hold_id}:{line_no}" + (AGAIN if again else "")


def line_answered_key(hold_id: str, line_no: int, action: LineAction) -> str:
    return f"{HoldCommand.LINE_ANSWERED.value}:{action.value}:{hold_id}:{line_no}"


def expiry_key(hold_id: str) -> str:
    return f"{HoldCommand.EXPIRE.value}:{hold_id}"

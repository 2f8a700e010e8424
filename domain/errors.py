"""The one error tree of Tessera.

Business outcomes (not enough stock, an expired hold) are results, never exceptions; these are
for commands that cannot be accepted at all and for broken invariants.
"""

from __future__ import annotations

from decimal import Decimal


class TesseraError(Exception):
    """Root of every Tessera error."""


class InvalidCommand(TesseraError, ValueError):
    """A command that cannot be accepted as sent; nothing was recorded.

    Parameters:
      message: what is wrong, in words a caller can show.
      field: the input field at fault, when there is one (``lines[2].quantity``).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class UnknownSku(InvalidCommand):
    def __init__(self, sku: str, *, field: str | None = None) -> None:
        super().__init__(f"unknown SKU {sku!r}", field=field)
        self.sku = sku


class UnknownWarehouse(InvalidCommand):
    def __init__(self, code: str, *, field: str | None = None) -> None:
        super().__init__(f"unknown or inactive warehouse {code!r}", field=field)
        self.code = code


class UnknownHold(InvalidCommand):
    def __init__(self, hold_id: str) -> None:
        super().__init__(f"unknown hold {hold_id!r}", field="hold_id")
        self.hold_id = hold_id


class IdempotencyConflict(TesseraError):
    """The idempotency key was already used for a command with another payload (HTTP 422)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used with a different payload")
        self.key = key


class ResultTimeout(TesseraError):
    """A ticket's result did not arrive in time; the command stays recorded and will apply."""


class LotMismatch(InvalidCommand):
    """A receipt names a lot the product already has, with another shade, caliber or expiry."""

    def __init__(self, message: str, *, lot: str, field: str = "lot") -> None:
        super().__init__(message, field=field)
        self.lot = lot


class CannotReceive(InvalidCommand):
    """Goods may not arrive at this warehouse (`warehouses.can_receive` is false)."""

    def __init__(self, code: str, *, field: str | None = None) -> None:
        super().__init__(f"warehouse {code!r} does not receive goods", field=field)
        self.code = code


class NotEnoughStock(InvalidCommand):
    """A warehouse operation asks for more than there is (in quarantine, available in a lot)."""

    def __init__(self, message: str, *, available: Decimal, field: str | None = "quantity") -> None:
        super().__init__(message, field=field)
        self.available = available


class UnknownQuarantine(InvalidCommand):
    def __init__(self, quarantine_id: str) -> None:
        super().__init__(
            f"unknown quarantine {quarantine_id!r} (or its receipt is not applied yet)", field="quarantine_id"
        )
        self.quarantine_id = quarantine_id


class CommandDead(TesseraError):
    """The command could not be applied and was parked as a dead letter (see `tessera dead-letters`).

    Parameters:
      key: its idempotency key.
      error: the last error it failed with.
      attempts: how many times applying it failed.
    """

    def __init__(self, key: str, error: str | None, attempts: int) -> None:
        super().__init__(f"command {key!r} could not be applied after {attempts} tries: {error}")
        self.key, self.error, self.attempts = key, error, attempts


class InvariantBroken(TesseraError):
    """A movement would break reserved ≤ on_hand or make a bucket negative: a bug, never a result."""


class UnknownCommandKind(TesseraError, ValueError):
    """An inbox row whose kind no handler applies (a payload a later release wrote, a typo)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown command kind {kind!r}")
        self.kind = kind


class ReferencesChanging(TesseraError):
    """Products or warehouses kept changing while a group of holds was recorded; nothing was recorded."""


class RecordingTimeout(TesseraError):
    """A request was not recorded in time (PostgreSQL out of reach?): it may or may not be recorded;
    send it again with the same idempotency key to find out."""


class OperationRefused(InvalidCommand):
    """A warehouse operation that cannot be done as asked (a transfer to the same warehouse, goods
    returned that were not sold, an approval by the one who asked), refused before it is recorded.

    Parameters:
      code: why, as a stable code (``same_warehouse``, ``more_than_sold``, ``same_approver``, ...).
      message: what is wrong, in words a caller can show.
      field: the input field at fault, when there is one.
    """

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


class UnknownOperation(InvalidCommand):
    """A transfer or adjustment id that names none (or one whose creation was refused)."""

    def __init__(self, what: str, operation_id: str) -> None:
        super().__init__(f"unknown {what} {operation_id!r}", field=f"{what}_id")
        self.operation_id = operation_id

"""Transfers: pieces of one lot sent from one warehouse to another of the same product.

Both ends are balances of the same product, so one writer (the product's shard) decides the whole
transfer. Sending takes the pieces out of the source lot's **available** stock (reserved, damaged
and quarantined pieces never move) and puts them in the destination's ``in_transit`` in the same
lot (same shade, caliber and expiry). Receiving brings them into the destination's on_hand: those
that arrived good, those that arrived damaged (into ``damaged``, with a reason), and the shortfall
that never arrived written off (with a reason). Cancelling before receipt puts them back at the source.

Transitions (transfer):
  (new) → in_transit (create: transfer_out at the source, in_transit at the destination)
  (new) → no transfer (create refused: same warehouse, inactive warehouse, destination that cannot
    receive, lot not at the source, more than its available: nothing changes)
  in_transit → received (receive: transfer_in of the good and damaged pieces, write_off of the rest)
  in_transit → in_transit (receive refused: more than was sent, or damaged / missing pieces without
    a reason: nothing changes)
  in_transit → cancelled (cancel before receipt: transfer_cancel at both ends)
  received | cancelled → unchanged (a second receive or cancel is a recorded no-op naming the state)
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from domain.allocation import LotStock, WarehouseRoute
from domain.movements import Decision, MovementKind, move
from domain.outcomes import Outcome
from domain.quantities import decimal_str

ZERO = Decimal(0)


class TransferStatus(enum.StrEnum):
    IN_TRANSIT = "in_transit"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class TransferRefusal(enum.StrEnum):
    """Why a transfer cannot be sent or received: the code a caller sees (problem type / result reason)."""

    SAME_WAREHOUSE = "same_warehouse"
    WAREHOUSE_INACTIVE = "warehouse_inactive"
    CANNOT_RECEIVE = "cannot_receive"
    UNKNOWN_LOT = "unknown_lot"
    INSUFFICIENT_STOCK = "insufficient_stock"
    MORE_THAN_SENT = "more_than_sent"
    REASON_REQUIRED = "reason_required"


@dataclass(slots=True)
class Transfer:
    """One transfer of `quantity` pieces of a lot, and what became of it."""

    id: str
    product_id: int
    lot_id: int
    source_id: int
    destination_id: int
    quantity: Decimal
    status: TransferStatus = TransferStatus.IN_TRANSIT
    received: Decimal = ZERO
    """Pieces that arrived good."""
    damaged: Decimal = ZERO
    """Pieces that arrived damaged (now in the destination's ``damaged``)."""
    written_off: Decimal = ZERO
    """Pieces that never arrived."""
    reason: str | None = None


TransferDecision = Decision[TransferRefusal]


def _refused(refusal: TransferRefusal, note: str) -> TransferDecision:
    return TransferDecision(Outcome.REJECTED, note, refusal)


def _noop(transfer: Transfer) -> TransferDecision:
    return TransferDecision(Outcome.NOOP, f"transfer is {transfer.status.value}")


def route_refusal(
    source: WarehouseRoute | None, destination: WarehouseRoute | None
) -> tuple[TransferRefusal, str] | None:
    """Why stock cannot go from `source` to `destination` (None: it can). The producer asks before
    recording (a 4xx); the writer asks again, as warehouses can close meanwhile."""
    if source is not None and destination is not None and source.warehouse_id == destination.warehouse_id:
        return TransferRefusal.SAME_WAREHOUSE, f"source and destination are both {source.code}"
    for end, route in (("source", source), ("destination", destination)):
        if route is None or not route.active:
            code = route.code if route is not None else "?"
            return TransferRefusal.WAREHOUSE_INACTIVE, f"the {end} warehouse {code} is unknown or inactive"
    assert destination is not None
    if not destination.can_receive:
        return TransferRefusal.CANNOT_RECEIVE, f"warehouse {destination.code} cannot receive stock"
    return None


def create(
    transfer: Transfer,
    source: LotStock | None,
    routes: dict[int, WarehouseRoute],
    destination: Callable[[], LotStock],
    *,
    unit_cost: Decimal | None = None,
) -> TransferDecision:
    """Send the pieces: out of the source lot's available stock, into the destination's in_transit.

    `destination()` gives the destination's balance in the same lot, created if missing: it is
    called only once the transfer is accepted, so a refusal creates nothing.
    """
    if refusal := route_refusal(routes.get(transfer.source_id), routes.get(transfer.destination_id)):
        return _refused(*refusal)
    if source is None:
        return _refused(TransferRefusal.UNKNOWN_LOT, "the lot has no stock at the source warehouse")
    if transfer.quantity > source.available:
        # Reserved (held), damaged and quarantined pieces stay where they are.
        return _refused(
            TransferRefusal.INSUFFICIENT_STOCK,
            f"{decimal_str(transfer.quantity)} pieces requested, {decimal_str(source.available)} available "
            f"in lot {source.lot_code} (reserved {decimal_str(source.reserved)})",
        )
    transfer.status = TransferStatus.IN_TRANSIT
    q = transfer.quantity
    return TransferDecision(
        Outcome.IN_TRANSIT,
        movements=[
            move(MovementKind.TRANSFER_OUT, source, on_hand=-q, unit_cost=unit_cost),
            move(MovementKind.TRANSFER_OUT, destination(), in_transit=q, unit_cost=unit_cost),
        ],
    )


def receive(
    transfer: Transfer,
    destination: LotStock,
    *,
    good: Decimal | None = None,
    damaged: Decimal = ZERO,
    reason: str | None = None,
    unit_cost: Decimal | None = None,
) -> TransferDecision:
    """The pieces arrive: `good` (all that was sent when not said) and `damaged` into on_hand, the
    damaged ones also into ``damaged``; the shortfall is written off. Damage and shortfall need a
    reason."""
    if transfer.status is not TransferStatus.IN_TRANSIT:
        return _noop(transfer)
    good = transfer.quantity - damaged if good is None else good
    short = transfer.quantity - good - damaged
    if good < 0 or short < 0:
        return _refused(
            TransferRefusal.MORE_THAN_SENT,
            f"{decimal_str(good + damaged)} pieces received, {decimal_str(transfer.quantity)} were sent",
        )
    if (damaged or short) and not reason:
        return _refused(TransferRefusal.REASON_REQUIRED, "damaged or missing pieces need a reason")
    arrived = good + damaged
    movements = []
    if arrived:
        movements.append(
            move(
                MovementKind.TRANSFER_IN,
                destination,
                on_hand=arrived,
                in_transit=-arrived,
                damaged=damaged,
                unit_cost=unit_cost,
                reason=reason if damaged else None,
            )
        )
    if short:
        movements.append(
            move(MovementKind.WRITE_OFF, destination, in_transit=-short, unit_cost=unit_cost, reason=reason)
        )
    transfer.status = TransferStatus.RECEIVED
    transfer.received, transfer.damaged, transfer.written_off, transfer.reason = good, damaged, short, reason
    return TransferDecision(Outcome.RECEIVED, movements=movements)


def cancel(
    transfer: Transfer, source: LotStock, destination: LotStock, *, unit_cost: Decimal | None = None
) -> TransferDecision:
    """Call the pieces back before they are received: into the source lot's on_hand again."""
    if transfer.status is not TransferStatus.IN_TRANSIT:
        return _noop(transfer)
    q = transfer.quantity
    transfer.status = TransferStatus.CANCELLED
    return TransferDecision(
        Outcome.CANCELLED,
        movements=[
            move(MovementKind.TRANSFER_CANCEL, source, on_hand=q, unit_cost=unit_cost),
            move(MovementKind.TRANSFER_CANCEL, destination, in_transit=-q, unit_cost=unit_cost),
        ],
    )

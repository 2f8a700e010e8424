"""Adjustments: a signed correction of a lot's on_hand, with a reason, and a second person's
approval above a threshold.

A small correction applies at once. One above the threshold (in pieces, or in value at the lot's
average cost; per product, else global) waits for approval by **another** actor than the one who
asked, and only then changes stock. Stock never goes below what is held (reserved + damaged +
quarantine): an adjustment that would take it there is refused, and changes nothing.

Transitions (adjustment):
  (new) → applied (within the threshold: on_hand changes at once)
  (new) → awaiting_approval (above the threshold: nothing changes yet)
  (new) → rejected (it would take on_hand below what is held: refused by the writer)
  awaiting_approval → approved (approved by another actor: on_hand changes)
  awaiting_approval → rejected (rejected by another actor: nothing changes)
  awaiting_approval → awaiting_approval (approval or rejection by the asker or by no named actor,
    or an approval that would take on_hand below what is held: refused, nothing changes)
  applied | approved | rejected → unchanged (a second approval or rejection is a recorded no-op:
    an approved adjustment applied twice has one effect)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from domain.allocation import LotStock
from domain.movements import Decision, Movement, MovementKind, move
from domain.outcomes import Outcome
from domain.quantities import decimal_str


class AdjustmentStatus(enum.StrEnum):
    APPLIED = "applied"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"


class AdjustmentRefusal(enum.StrEnum):
    SAME_APPROVER = "same_approver"
    """The actor who asked cannot approve (or reject) their own adjustment."""
    INSUFFICIENT_STOCK = "insufficient_stock"


@dataclass(frozen=True, slots=True)
class Threshold:
    """Above either limit (absolute pieces, absolute value), an adjustment waits for approval; a
    limit of None does not apply."""

    pieces: Decimal | None = None
    value: Decimal | None = None

    def needs_approval(self, quantity: Decimal, unit_cost: Decimal | None) -> bool:
        if self.pieces is not None and abs(quantity) > self.pieces:
            return True
        return self.value is not None and unit_cost is not None and abs(quantity) * unit_cost > self.value

    def over(self, product: Threshold) -> Threshold:
        """This (global) threshold, with a product's own limits in place of those it sets."""
        return Threshold(
            product.pieces if product.pieces is not None else self.pieces,
            product.value if product.value is not None else self.value,
        )


@dataclass(slots=True)
class Adjustment:
    id: str
    product_id: int
    warehouse_id: int
    lot_id: int
    quantity: Decimal
    """Signed: pieces found (+) or lost (−)."""
    reason: str
    requested_by: str | None
    status: AdjustmentStatus = AdjustmentStatus.AWAITING_APPROVAL
    decided_by: str | None = None


AdjustmentDecision = Decision[AdjustmentRefusal]


def _apply(adjustment: Adjustment, stock: LotStock, unit_cost: Decimal | None) -> list[Movement] | None:
    """The movement, or None if it would take on_hand below what is held (or below zero)."""
    held = stock.reserved + stock.damaged + stock.quarantine
    if stock.on_hand + adjustment.quantity < held:
        return None
    return [
        move(
            MovementKind.ADJUSTMENT,
            stock,
            on_hand=adjustment.quantity,
            unit_cost=unit_cost,
            reason=adjustment.reason,
        )
    ]


def _short(adjustment: Adjustment, stock: LotStock) -> AdjustmentDecision:
    held = stock.reserved + stock.damaged + stock.quarantine
    return AdjustmentDecision(
        Outcome.REJECTED,
        f"{decimal_str(adjustment.quantity)} pieces would leave {decimal_str(stock.on_hand + adjustment.quantity)} "
        f"on hand, below the {decimal_str(held)} held (reserved, damaged, quarantine)",
        AdjustmentRefusal.INSUFFICIENT_STOCK,
    )


def request(
    adjustment: Adjustment, stock: LotStock, threshold: Threshold, unit_cost: Decimal | None
) -> AdjustmentDecision:
    """A new adjustment: applied at once, or left waiting for approval above the threshold."""
    if threshold.needs_approval(adjustment.quantity, unit_cost):
        adjustment.status = AdjustmentStatus.AWAITING_APPROVAL
        return AdjustmentDecision(Outcome.AWAITING_APPROVAL, "above the approval threshold")
    movements = _apply(adjustment, stock, unit_cost)
    if movements is None:
        adjustment.status = AdjustmentStatus.REJECTED
        return _short(adjustment, stock)
    adjustment.status = AdjustmentStatus.APPLIED
    return AdjustmentDecision(Outcome.ADJUSTED, movements=movements)


def asked_by(token_id: int | None, name: str | None) -> str | None:
    """Who asked, as an approval compares it: the token if there is one, else the name given."""
    if token_id is not None:
        return f"token {token_id}"
    return f"name {name}" if name is not None else None


def same_approver(asker: str | None, approver: str | None) -> bool:
    """Whether `approver` may not decide an adjustment `asker` asked for: the same, or nobody named."""
    return approver is None or approver == asker


def _decided_by_asker(adjustment: Adjustment, approver: str | None) -> AdjustmentDecision | None:
    if adjustment.status is not AdjustmentStatus.AWAITING_APPROVAL:
        return AdjustmentDecision(Outcome.NOOP, f"adjustment is {adjustment.status.value}")
    if same_approver(adjustment.requested_by, approver):
        return AdjustmentDecision(
            Outcome.REJECTED,
            "an adjustment is approved or rejected by another actor than the one who asked",
            AdjustmentRefusal.SAME_APPROVER,
        )
    return None


def approve(
    adjustment: Adjustment, stock: LotStock, approver: str | None, unit_cost: Decimal | None = None
) -> AdjustmentDecision:
    """A second person approves: the adjustment changes stock now (once, however often approved)."""
    if refused := _decided_by_asker(adjustment, approver):
        return refused
    movements = _apply(adjustment, stock, unit_cost)
    if movements is None:  # stock moved meanwhile: it waits, to be rejected or approved later
        return _short(adjustment, stock)
    adjustment.status, adjustment.decided_by = AdjustmentStatus.APPROVED, approver
    return AdjustmentDecision(Outcome.APPROVED, movements=movements)


def reject(adjustment: Adjustment, approver: str | None) -> AdjustmentDecision:
    """A second person rejects: the adjustment never changes stock."""
    if refused := _decided_by_asker(adjustment, approver):
        return refused
    adjustment.status, adjustment.decided_by = AdjustmentStatus.REJECTED, approver
    return AdjustmentDecision(Outcome.REJECTED, "rejected by the approver")

"""Damage: pieces found damaged, from sellable stock (or from quarantine: `domain.quarantine`).

Transitions of pieces in a lot balance:
  available --damage q ≤ available-->  damaged (Δdamaged +q; on_hand unchanged: still on the shelf)
  available --damage q > available-->  refused, nothing changes (reserved pieces belong to their
                                       holds, damaged and quarantined ones are counted already)
  quarantine --write off q-->          damaged (`domain.quarantine.write_off`)
A damage always says why (its reason) and who (the command's actor).
"""

from __future__ import annotations

from decimal import Decimal

from domain.allocation import LotStock
from domain.movements import Movement, MovementKind, move
from domain.outcomes import Refused
from domain.quantities import decimal_str


def damage(
    stock: LotStock, pieces: Decimal, *, reason: str, unit_cost: Decimal | None = None
) -> Movement | Refused:
    """Mark `pieces` of the lot's available stock damaged, or refuse (never in part)."""
    if pieces > stock.available:
        return Refused(
            f"{decimal_str(pieces)} pieces to damage, {decimal_str(stock.available)} available in lot "
            f"{stock.lot_code}",
            available=stock.available,
        )
    return move(MovementKind.DAMAGE, stock, damaged=pieces, unit_cost=unit_cost, reason=reason)

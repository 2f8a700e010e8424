"""Goods in: what a receipt may say about a lot the product already has.

Transitions of a receipt line of q pieces into lot L of a product at warehouse W:
  L unknown                  --receipt-->  lot L with the line's facts; a balance at W of q on hand
  L known, facts agree       --receipt-->  W's balance of L (created if none): on_hand + q
  L known, a fact unstated   --receipt stating it-->  L takes that fact (on every balance of it)
  L known, a fact differs    --receipt-->  refused (lot_mismatch), nothing changes
  any of the above, into quarantine      -->  on_hand + q and quarantine + q (not sellable until
                                              released: `domain.quarantine`)
  any of the above, with a unit cost c   -->  W's average cost takes q at c in (`domain.valuation`)

A lot is one production run: one shade, one caliber, one expiry. Tiles of two shades must never be
merged into one lot (a floor laid from it shows it), so a receipt that names a known lot code with
another shade, caliber or expiry is refused, with the lot's facts in the message. A fact the
receipt leaves out is not a difference (a lot whose fact was never stated takes the first one given).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LotFacts:
    shade: str | None
    caliber: str | None
    expiry: dt.date | None

    def describe(self) -> str:
        return ", ".join(
            f"{name} {value if value is not None else 'not stated'}"
            for name, value in (("shade", self.shade), ("caliber", self.caliber), ("expiry", self.expiry))
        )


def lot_conflict(lot_code: str, known: LotFacts, received: LotFacts) -> str | None:
    """Why a receipt into lot `lot_code` cannot be taken (None: it can)."""
    differs = [
        f"{name} {new}"
        for name, old, new in (
            ("shade", known.shade, received.shade),
            ("caliber", known.caliber, received.caliber),
            ("expiry", known.expiry, received.expiry),
        )
        if old is not None and new is not None and old != new
    ]
    if not differs:
        return None
    return f"lot {lot_code} is {known.describe()}; this receipt says {', '.join(differs)}"


def merged_facts(known: LotFacts, received: LotFacts) -> LotFacts:
    """A known lot's facts once a receipt that agrees with them is taken: a fact the lot had not
    stated takes the receipt's."""
    return LotFacts(
        known.shade if known.shade is not None else received.shade,
        known.caliber if known.caliber is not None else received.caliber,
        known.expiry if known.expiry is not None else received.expiry,
    )

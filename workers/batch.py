"""One batch in memory: what its claim loaded, what its commands changed, what it will send.

Handlers (`workers.handlers`) take what they need from the batch, let the domain decide and record
the result here; the writer then writes `writes()` in one statement and sends the answers. A batch
does no I/O: a lot or balance a receipt creates gets an id drawn with the claim, and is written
with the rest.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from db.batch_state import BatchState, InboxCommand
from db.inbox import NewCommand
from db.records import Row
from db.writes import BatchWrites, HoldAlert, LedgerEntry, StockAlert
from domain import holds as hold_rules
from domain.allocation import LotStock
from domain.commands import HoldCommand, expiry_key, line_answered_key, line_command_key, shard_of
from domain.counts import HeldLine
from domain.errors import InvariantBroken
from domain.holds import Alert, HoldDecision
from domain.movements import Movement
from domain.outcomes import Outcome
from domain.quantities import decimal_str
from domain.receipts import LotFacts
from domain.results import HoldView, LotName, hold_result
from domain.states import Hold, HoldLine, LineAction, line_after
from domain.valuation import Valuation, on_hand_at

Result = dict[str, Any]


class Batch:
    """The in-memory state of one transaction: what is loaded, what changed, what to send."""

    def __init__(self, now: dt.datetime, shards: int, state: BatchState) -> None:
        self.now, self.shards, self.state = now, shards, state
        self.dirty_stocks: dict[int, LotStock] = {}
        self.dirty_lines: dict[tuple[str, int], HoldLine] = {}
        self.dirty_holds: dict[str, Hold] = {}
        self.ledger: list[LedgerEntry] = []
        self.follow_ups: list[NewCommand] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.results: list[tuple[InboxCommand, Result]] = []
        self.wake: list[str] = []  # holds decided in this batch
        self.reply_to: dict[str, str] = {}  # hold → the client whose line command decided it
        self.pending: dict[tuple[str, int], list[LineAction]] = {}  # (hold, line) → commands sent to it
        self.alerts: dict[str, HoldAlert] = {}
        self.resolved_alerts: set[str] = set()
        self.parked: set[int] = set()
        self.deferred = 0
        self.new_lots: list[LotStock] = []
        self.new_stocks: set[int] = set()
        self.lot_facts: dict[int, LotFacts] = {}
        self.dirty_valuations: dict[tuple[int, int], Valuation] = {}
        self.stock_alerts: dict[tuple[str, int, int | None], StockAlert] = {}
        self.saved: dict[str, dict[str, Row]] = {}  # table → id → the operation row to write
        self.warehouse_ledger = False  # a movement with more than a hold's columns (see BatchWrites)

    # -- what the commands act on --------------------------------------------------------------

    def hold(self, command: InboxCommand) -> tuple[Hold, list[HoldLine]]:
        hold = self.state.holds[command.payload["hold_id"]]
        return hold, self.state.lines[hold.id]

    def line(self, command: InboxCommand) -> tuple[Hold, HoldLine]:
        hold, lines = self.hold(command)
        line_no = command.payload["line_no"]
        return hold, next(line for line in lines if line.line_no == line_no)

    def stocks(self, product_id: int) -> list[LotStock]:
        """Every lot balance of a product its command named (empty: none yet). A product no
        command named was not loaded: KeyError, never an empty shelf (the command fails, and is
        parked if it keeps failing)."""
        return self.state.stocks[product_id]

    def new_stock(
        self, product_id: int, warehouse_id: int, lot_code: str, facts: LotFacts, known: LotStock | None
    ) -> LotStock:
        """A balance the batch creates: in a lot the product has (`known`), or a new lot."""
        try:
            balance_id = self.state.fresh_balance_ids.pop()
            lot_id = known.lot_id if known is not None else self.state.fresh_lot_ids.pop()
        except IndexError:
            raise InvariantBroken("more new balances than the claim drew ids for") from None
        stock = LotStock(
            balance_id,
            product_id,
            warehouse_id,
            lot_id,
            lot_code,
            known.received_at if known is not None else self.now,
            facts.expiry,
            Decimal(0),
            Decimal(0),
            shade=facts.shade,
            caliber=facts.caliber,
        )
        if known is None:
            self.new_lots.append(stock)
        self.new_stocks.add(balance_id)
        self.stocks(product_id).append(stock)
        self.state.lot_names[lot_id] = LotName(lot_code, facts.shade, facts.caliber)
        return stock

    def balance(self, product_id: int, warehouse_id: int, lot_id: int) -> LotStock | None:
        """The lot's balance at a warehouse, if it has one there."""
        return next(
            (s for s in self.stocks(product_id) if s.warehouse_id == warehouse_id and s.lot_id == lot_id),
            None,
        )

    def balance_in(self, lot: LotStock, warehouse_id: int) -> LotStock:
        """The balance of `lot` (its product and lot) at a warehouse, created empty if it has none
        there (a transfer's destination)."""
        if (found := self.balance(lot.product_id, warehouse_id, lot.lot_id)) is not None:
            return found
        facts = LotFacts(lot.shade, lot.caliber, lot.expiry)
        return self.new_stock(lot.product_id, warehouse_id, lot.lot_code, facts, lot)

    def complete_lot_facts(self, product_id: int, lot_id: int, facts: LotFacts) -> None:
        """A known lot's facts, as a receipt completed them: on each of its balances, and written."""
        for stock in self.stocks(product_id):
            if stock.lot_id == lot_id:
                stock.shade, stock.caliber, stock.expiry = facts.shade, facts.caliber, facts.expiry
                self.state.lot_names[lot_id] = LotName(stock.lot_code, facts.shade, facts.caliber)
        self.lot_facts[lot_id] = facts

    # -- what the commands did -----------------------------------------------------------------

    def record(
        self,
        movement: Movement,
        command: InboxCommand,
        hold_id: str | None = None,
        line_no: int | None = None,
    ) -> None:
        """A movement the command made, written to the ledger with who asked for it (the payload's
        `actor`, a token's name; None: the system)."""
        actor = command.payload.get("actor")
        self.dirty_stocks[movement.stock.balance_id] = movement.stock
        self.ledger.append(LedgerEntry(movement, command.seq, hold_id, line_no, actor))
        if not self.warehouse_ledger and (
            actor is not None
            or movement.unit_cost is not None
            or movement.reason is not None
            or movement.in_transit
            or movement.damaged
            or movement.quarantine
        ):
            self.warehouse_ledger = True

    def valuation(self, product_id: int, warehouse_id: int) -> Valuation | None:
        """The product's valuation at the warehouse (None: no cost known there yet). Only a batch
        with stock commands loads valuations."""
        if self.state.valuations is None:
            raise InvariantBroken("valuations are loaded for stock commands only")
        return self.state.valuations.get((product_id, warehouse_id))

    def average_cost(self, product_id: int, warehouse_id: int) -> Decimal | None:
        """What a piece of the product at the warehouse is worth now (None: no cost known there)."""
        valuation = self.valuation(product_id, warehouse_id)
        return valuation.average_cost if valuation is not None else None

    def set_average_cost(self, product_id: int, warehouse_id: int, average_cost: Decimal) -> Valuation:
        """Give the product at the warehouse this average unit cost (its valuation is created if
        it had none); its quantity is set from the balances when the batch is written."""
        valuation = self.valuation(product_id, warehouse_id)
        if valuation is None:
            valuation = Valuation(product_id, warehouse_id, Decimal(0), average_cost)
            assert self.state.valuations is not None
            self.state.valuations[(product_id, warehouse_id)] = valuation
        valuation.average_cost = average_cost
        self.dirty_valuations[(product_id, warehouse_id)] = valuation
        return valuation

    def held_lines(self, product_id: int, warehouse_id: int, lot_id: int) -> list[HeldLine]:
        """The hold lines reserved on a balance a count names (loaded for counts only)."""
        return self.state.held.get((product_id, warehouse_id, lot_id), [])

    def operation(self, table: str, row_id: str) -> Row | None:
        """An operation row (`db.records`: a transfer, an adjustment, a quarantine) as this batch
        left it, or as loaded; None if there is none with that id."""
        saved = self.saved.get(table, {}).get(row_id)
        return saved if saved is not None else self.state.records.get(table, {}).get(row_id)

    def save(self, table: str, row: Row) -> None:
        """Write an operation row (whole: every column of its table's declaration) with the batch."""
        self.saved.setdefault(table, {})[str(row["id"])] = row

    def raise_alert(
        self,
        kind: str,
        product_id: int,
        warehouse_id: int | None,
        detail: dict[str, Any],
        severity: str = "warning",
    ) -> None:
        """Raise an alert about a product in a warehouse, or add to the one open (one per kind,
        product and warehouse)."""
        key = (kind, product_id, warehouse_id)
        raised = self.stock_alerts.get(key)
        details = [*raised.details, detail] if raised is not None else [detail]
        self.stock_alerts[key] = StockAlert(kind, severity, product_id, warehouse_id, details)

    def line_changed(self, hold: Hold, line: HoldLine) -> None:
        self.dirty_lines[(hold.id, line.line_no)] = line

    def answered(
        self, action: LineAction, hold: Hold, line: HoldLine, command: InboxCommand
    ) -> Result | None:
        """Count a line's answer on its hold, here or at the hold's home; the hold's decision if it settled."""
        if not action.answers:
            return None
        if hold.id in self.state.locked:
            return self.count_answer(hold, command)
        # The hold's home shard is another process's: send the answer there.
        payload = {"hold_id": hold.id, "line_no": line.line_no}
        if reply_to := command.payload.get("reply_to"):
            payload["reply_to"] = reply_to
        self.follow_ups.append(
            NewCommand.of(
                line_answered_key(hold.id, line.line_no, action),
                HoldCommand.LINE_ANSWERED.value,
                payload,
                self.state.home_shards[hold.id],
            )
        )
        return None

    def count_answer(self, hold: Hold, command: InboxCommand) -> Result | None:
        """One more line has answered; the last one settles the hold (returns its decision)."""
        self.dirty_holds[hold.id] = hold
        decision = hold_rules.line_answered(hold, self.state.lines[hold.id])
        return None if decision is None else self.decided(hold, decision, command)

    def decided(self, hold: Hold, decision: HoldDecision, command: InboxCommand) -> Result:
        """Carry out a hold decision: save the hold, send its line commands, schedule its expiry."""
        if decision.changed:
            self.dirty_holds[hold.id] = hold
            self.events.append((f"hold.{hold.status.value}", {"hold_id": hold.id}))
        self._fan_out(hold, decision)
        if decision.schedule_expiry:
            self.follow_ups.append(
                NewCommand.of(
                    expiry_key(hold.id),
                    HoldCommand.EXPIRE.value,
                    {"hold_id": hold.id},
                    self.state.home_shards[hold.id],
                    not_before=hold.expires_at,
                )
            )
        self._alert(hold, decision)
        if hold.status.settled and decision.changed:
            self.wake.append(hold.id)
            if reply_to := command.payload.get("reply_to"):
                self.reply_to[hold.id] = reply_to
        return {"outcome": decision.outcome, "note": decision.note, "hold_status": hold.status.value}

    def _fan_out(self, hold: Hold, decision: HoldDecision) -> None:
        lines = {line.line_no: line for line in self.state.lines[hold.id]}
        for fan_out in decision.fan_out:
            line = lines[fan_out.line_no]
            self.pending.setdefault((hold.id, line.line_no), []).append(fan_out.action)
            payload = {"hold_id": hold.id, "line_no": line.line_no, "product_id": line.product_id}
            self.follow_ups.append(
                NewCommand.of(
                    line_command_key(hold.id, line.line_no, fan_out.action, again=fan_out.again),
                    fan_out.action.value,
                    payload,
                    shard_of(line.sku, self.shards),
                )
            )

    def _alert(self, hold: Hold, decision: HoldDecision) -> None:
        if decision.alert is Alert.RAISE:
            self.alerts[hold.id] = HoldAlert(hold.id, self._alert_detail(hold, decision))
        elif decision.alert is Alert.RESOLVE:
            raised = self.alerts.get(hold.id)
            if raised is not None:  # raised by this very batch: written as resolved at once
                self.alerts[hold.id] = HoldAlert(hold.id, raised.detail, resolved=True)
            else:
                self.resolved_alerts.add(hold.id)

    def _alert_detail(self, hold: Hold, decision: HoldDecision) -> dict[str, Any]:
        """A paid hold without its stock, every line named with its final state."""
        return {
            "hold_id": hold.id,
            "mode": hold.mode.value,
            "note": decision.note,
            "lines": [
                {
                    "line_no": line.line_no,
                    "sku": line.sku,
                    "pieces": decimal_str(line.pieces),
                    "status": line_after(line.status, self.pending.get((hold.id, line.line_no), [])).value,
                    "reason": line.reason,
                }
                for line in self.state.lines[hold.id]
            ],
        }

    def park(self, command: InboxCommand) -> Result:
        """A command that kept failing becomes a dead letter, in its place in order."""
        error = command.last_error or "unknown error"
        self.parked.add(command.seq)
        self.events.append(
            (
                "command.dead",
                {"key": command.key, "kind": command.kind, "shard": command.shard, "error": error},
            )
        )
        return {"outcome": Outcome.DEAD, "error": error, "attempts": command.attempts}

    # -- what the batch sends ------------------------------------------------------------------

    def answer(self, hold_id: str) -> str:
        """The hold's answer as a reader would see it after commit, sent with its wake-up so the
        waiting checkout needs no read of its own."""
        lines = self.state.lines[hold_id]
        return hold_result(
            HoldView(
                self.state.holds[hold_id],
                self.state.created_at[hold_id],
                lines,
                shown={line.line_no: self.state.shown[(hold_id, line.line_no)] for line in lines},
                lots=self.state.lot_names,
                warehouses={r.warehouse_id: r.code for r in self.state.routes},
                pending={line.line_no: self.pending.get((hold_id, line.line_no), []) for line in lines},
            )
        ).model_dump_json()

    def answers(self) -> dict[str, dict[str, str]]:
        """client → hold → answer, for the decided holds whose client listens for them."""
        by_client: dict[str, dict[str, str]] = {}
        for hold_id, client in self.reply_to.items():
            by_client.setdefault(client, {})[hold_id] = self.answer(hold_id)
        return by_client

    def writes(self) -> BatchWrites:
        touched = sorted({s.product_id for s in self.dirty_stocks.values()})
        stock_events = [
            (
                "stock.changed",
                {
                    "product_id": pid,
                    "available": decimal_str(sum((s.available for s in self.stocks(pid)), Decimal(0))),
                },
            )
            for pid in touched
        ]
        return BatchWrites(
            stocks=list(self.dirty_stocks.values()),
            ledger=self.ledger,
            lines=list(self.dirty_lines.values()),
            holds=list(self.dirty_holds.values()),
            commands=self.follow_ups,
            events=self.events + stock_events,
            results=self.results,
            parked=self.parked,
            alerts=list(self.alerts.values()),
            resolved_alerts=sorted(self.resolved_alerts),
            new_lots=self.new_lots,
            new_stocks=self.new_stocks,
            lot_facts=self.lot_facts,
            valuations=self._valuations_written(),
            stock_alerts=list(self.stock_alerts.values()),
            records={table: list(rows.values()) for table, rows in self.saved.items()},
            warehouse_ledger=self.warehouse_ledger,
        )

    def _valuations_written(self) -> list[Valuation] | None:
        """The valuations to write, each with its quantity = on_hand at its warehouse now (None:
        the batch loaded none; the statement follows the ledger's on_hand changes itself)."""
        loaded = self.state.valuations
        if loaded is None:
            return None
        touched = {(s.product_id, s.warehouse_id) for s in self.dirty_stocks.values()}
        for key in touched & loaded.keys():
            self.dirty_valuations[key] = loaded[key]
        for (product_id, warehouse_id), valuation in self.dirty_valuations.items():
            valuation.quantity = on_hand_at(self.stocks(product_id), warehouse_id)
        return list(self.dirty_valuations.values())

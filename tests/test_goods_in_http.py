"""Goods in over real HTTP (`tessera api` and a worker against the real servers): receipts of several
lines with costs and quarantine, the one-line receipt of the front door's contract, quarantine
release and write-off, damage, valuation, the movement history and the stock view. Every refusal is
a problem document and changes nothing; every test ends with reconcile clean."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from producers.http.ledger import encode_cursor
from tests.conftest import check_invariants, fingerprint
from tests.stack import SKU, Stack, running_stack

TABLES = ("commands", "movements", "stock_balances", "lots", "quarantines", "stock_valuations", "alerts")
WALL, MOSAIC, GROUT = "WALL-20x50-WHITE", "MOSAIC-30", "GROUT-5KG"


@pytest.fixture(scope="module")
def api(admin_engine: Engine, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(admin_engine, template_db, tmp_path_factory.mktemp("goods-in")) as stack:
        stack.client.upsert_warehouse(code="RET1", name="Returns desk", can_ship=False, can_receive=False)
        yield stack


@pytest.fixture
def consistent(api: Stack) -> Iterator[None]:
    yield
    check_invariants(api.engine)


def _post(
    api: Stack, path: str, key: str, body: dict[str, Any] | None = None, wait: int = 10
) -> httpx.Response:
    return api.call("POST", f"{path}?wait={wait}", "warehouse", headers={"Idempotency-Key": key}, json=body)


def _receive(api: Stack, key: str, *lines: dict[str, Any], **documents: str) -> dict[str, Any]:
    sent = _post(api, "/v1/receipts", key, {"lines": list(lines), **documents})
    assert sent.status_code == 200, sent.text
    answer: dict[str, Any] = sent.json()
    assert answer["status"] == "applied"
    return answer


def _lot(api: Stack, sku: str, warehouse: str, lot: str) -> dict[str, Any]:
    stock = api.call("GET", f"/v1/stock/{sku}", "warehouse").json()
    return next(b for b in stock["lots"] if b["warehouse"] == warehouse and b["lot"] == lot)


def _numbers(row: dict[str, Any], *names: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(str(row[name])) for name in names)


def _refused(
    api: Stack, call: Callable[[], httpx.Response], status: int, code: str, field: str | None
) -> None:
    """The call is answered with a problem document (status, code, field) and changes no row."""
    before = fingerprint(api.engine, TABLES)
    answer = call()
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert (problem["code"], problem["field"]) == (code, field), problem
    assert problem["detail"]
    assert fingerprint(api.engine, TABLES) == before, "a refused request changed the database"


# -- receipts ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("consistent")
def test_a_receipt_of_several_lines_records_each_line_and_answers_each(api: Stack) -> None:
    documents = {"supplier": "Cesarom", "purchase_order": "PO-7", "invoice": "INV-9"}
    lines = [
        {
            "warehouse": "CLJ1",
            "sku": SKU,
            "quantity": "10",
            "unit": "box",
            "lot": "G2",
            "shade": "B",
            "unit_cost": "3.5",
        },
        {"warehouse": "CLJ1", "sku": WALL, "quantity": "5", "unit": "box", "lot": "W1", "quarantine": True},
        {"warehouse": "BUC1", "sku": MOSAIC, "quantity": 22, "lot": "M1", "expiry": "2030-01-31"},
    ]

    answer = _receive(api, "grn-1", *lines, **documents)

    assert [(line["line_no"], line["idempotency_key"]) for line in answer["lines"]] == [
        (1, "grn-1:1"),
        (2, "grn-1:2"),
        (3, "grn-1:3"),
    ]
    assert [line["result"]["outcome"] for line in answer["lines"]] == ["received"] * 3
    quarantined = answer["lines"][1]["quarantine_id"]
    assert answer["lines"][1]["result"]["quarantine_id"] == quarantined
    assert answer["lines"][0]["quarantine_id"] is None
    assert _numbers(_lot(api, SKU, "CLJ1", "G2"), "on_hand", "available") == (40, 40)
    assert _numbers(_lot(api, WALL, "CLJ1", "W1"), "on_hand", "quarantine", "available") == (50, 50, 0)
    history = api.call("GET", f"/v1/movements?sku={SKU}&warehouse=CLJ1&limit=1", "ops").json()["movements"]
    assert history[0]["command_key"] == "grn-1:1"
    assert (history[0]["actor"], history[0]["reason"]) == (
        "test warehouse",
        "supplier Cesarom, purchase order PO-7, invoice INV-9",
    )
    assert _numbers(history[0], "unit_cost", "total_cost") == (Decimal("3.5"), 140)
    assert _numbers(history[0]["balance_after"], "on_hand", "reserved", "quarantine") == (40, 0, 0)

    counted = fingerprint(api.engine, ("movements",))
    again = _post(api, "/v1/receipts", "grn-1", {"lines": lines, **documents})
    assert again.status_code == 200 and again.json()["lines"] == answer["lines"]
    assert fingerprint(api.engine, ("movements",)) == counted  # a resend changes nothing


@pytest.mark.usefixtures("consistent")
def test_the_one_line_receipt_of_the_front_door_keeps_its_contract(api: Stack) -> None:
    body = {"warehouse": "BUC1", "sku": GROUT, "quantity": "30", "lot": "GR1", "unit_cost": "1.25"}
    sent = _post(api, "/v1/receipts", "rcv-grout", body)
    assert sent.status_code == 200, sent.text
    assert sent.json()["idempotency_key"] == "rcv-grout"
    assert sent.json()["result"]["outcome"] == "received"
    assert set(sent.json()) == {"idempotency_key", "status", "result"}
    assert _numbers(_lot(api, GROUT, "BUC1", "GR1"), "on_hand") == (30,)


@pytest.mark.usefixtures("consistent")
def test_receipts_with_a_cost_average_into_the_valuation_of_their_warehouse(api: Stack) -> None:
    line = {"warehouse": "CLJ1", "sku": MOSAIC, "unit": "piece", "lot": "MV"}
    _receive(api, "val-1", {**line, "quantity": "100", "unit_cost": "2"})
    _receive(api, "val-2", {**line, "quantity": "300", "unit_cost": "3"})

    valued = api.call("GET", "/v1/valuation?warehouse=CLJ1", "ops").json()
    cluj = next(w for w in valued["warehouses"] if w["warehouse"] == "CLJ1")
    mosaic = next(p for p in cluj["products"] if p["sku"] == MOSAIC)
    assert _numbers(mosaic, "quantity", "average_cost", "value") == (400, Decimal("2.75"), 1100)
    assert [w["warehouse"] for w in valued["warehouses"]] == ["CLJ1"]
    assert Decimal(str(valued["value"])) == sum(Decimal(str(w["value"])) for w in valued["warehouses"])
    assert api.call("GET", "/v1/valuation", "warehouse").status_code == 200


BAD_LINE = {"warehouse": "BUC1", "sku": SKU, "quantity": "2", "unit": "box", "lot": "L1", "shade": "A"}
BAD_RECEIPTS = {
    "a unit the product does not have": (
        [{**BAD_LINE, "sku": GROUT, "lot": "GR9"}],
        "invalid_command",
        "lines[0].quantity",
    ),
    "a known lot with another shade": ([{**BAD_LINE, "shade": "B"}], "lot_mismatch", "lines[0].lot"),
    "one lot, two shades in one receipt": (
        [{**BAD_LINE, "lot": "NEW", "shade": "C"}, {**BAD_LINE, "lot": "NEW", "shade": "D"}],
        "lot_mismatch",
        "lines[1].lot",
    ),
    "a zero quantity": ([{**BAD_LINE, "quantity": "0"}], "invalid_command", "lines[0].quantity"),
    "a negative quantity": ([{**BAD_LINE, "quantity": -3}], "invalid_command", "lines[0].quantity"),
    "part of a piece": (
        [{**BAD_LINE, "unit": "piece", "quantity": "1.5"}],
        "invalid_command",
        "lines[0].quantity",
    ),
    "more decimals than a quantity has": (
        [{**BAD_LINE, "quantity": "1.0001"}],
        "invalid_command",
        "lines[0].quantity",
    ),
    "an unknown SKU": ([{**BAD_LINE, "sku": "NOPE-1"}], "unknown_sku", "lines[0].sku"),
    "a warehouse that receives no goods": (
        [{**BAD_LINE, "warehouse": "RET1"}],
        "cannot_receive",
        "lines[0].warehouse",
    ),
    "an unknown warehouse": ([{**BAD_LINE, "warehouse": "NOWH"}], "unknown_warehouse", "lines[0].warehouse"),
    "a cost with five decimals": (
        [{**BAD_LINE, "unit_cost": "1.00001"}],
        "invalid_command",
        "lines[0].unit_cost",
    ),
    "a negative cost": ([{**BAD_LINE, "unit_cost": "-1"}], "invalid_command", "lines[0].unit_cost"),
    "no lines": ([], "invalid_command", "lines"),
}


@pytest.mark.usefixtures("consistent")
@pytest.mark.parametrize(("lines", "code", "field"), BAD_RECEIPTS.values(), ids=BAD_RECEIPTS.keys())
def test_a_bad_receipt_is_refused_whole_and_changes_nothing(
    api: Stack, lines: list[dict[str, Any]], code: str, field: str
) -> None:
    good = {**BAD_LINE, "lot": "FINE", "shade": None}  # a first line that alone would be taken
    _refused(
        api,
        lambda: _post(
            api, "/v1/receipts", f"bad-{uuid.uuid4()}", {"lines": [good, *lines]} if lines else {"lines": []}
        ),
        422,
        code,
        _shifted(field, bool(lines)),
    )


def _shifted(field: str, shifted: bool) -> str:
    """The field of a bad line once a good line goes before it."""
    if not shifted or not field.startswith("lines["):
        return field
    index, rest = field[len("lines[") :].split("]", 1)
    return f"lines[{int(index) + 1}]{rest}"


@pytest.mark.usefixtures("consistent")
def test_the_one_line_receipt_names_its_bad_fields_as_sent(api: Stack) -> None:
    _refused(
        api,
        lambda: _post(api, "/v1/receipts", "bad-one", {**BAD_LINE, "shade": "Z"}),
        422,
        "lot_mismatch",
        "lot",
    )
    _refused(
        api,
        lambda: _post(api, "/v1/receipts", "bad-two", {**BAD_LINE, "quantity": "0"}),
        422,
        "invalid_command",
        "quantity",
    )
    _refused(
        api,
        lambda: _post(api, "/v1/receipts", "bad-three", {"lines": [BAD_LINE], "sku": SKU}),
        422,
        "invalid_request",
        "sku",
    )


# -- quarantine ----------------------------------------------------------------------------------


def _quarantined(api: Stack, key: str, boxes: str = "3") -> str:
    line = {
        "warehouse": "BUC1",
        "sku": WALL,
        "quantity": boxes,
        "unit": "box",
        "lot": f"Q-{key}",
        "quarantine": True,
    }
    quarantine_id: str = _receive(api, key, line)["lines"][0]["quarantine_id"]
    return quarantine_id


@pytest.mark.usefixtures("consistent")
def test_a_quarantined_line_is_released_in_part_then_whole_and_then_has_nothing_left(api: Stack) -> None:
    quarantine_id = _quarantined(api, "q-release")  # 30 pieces
    path = f"/v1/quarantine/{quarantine_id}/release"
    _refused(api, lambda: _post(api, path, "rel-0", {"quantity": "31"}), 422, "not_enough_stock", "quantity")
    _refused(api, lambda: _post(api, path, "rel-0", {"quantity": "0.5"}), 422, "invalid_command", "quantity")

    part = _post(api, path, "rel-1", {"quantity": "1", "unit": "box"})
    assert part.status_code == 200, part.text
    assert (part.json()["result"]["outcome"], part.json()["result"]["left"]) == ("released", "20")
    assert _numbers(_lot(api, WALL, "BUC1", "Q-q-release"), "on_hand", "quarantine", "available") == (
        30,
        20,
        10,
    )

    rest = _post(api, path, "rel-2")  # no body: all that is left
    assert rest.json()["result"]["status"] == "released", rest.text
    assert _numbers(_lot(api, WALL, "BUC1", "Q-q-release"), "quarantine", "available") == (0, 30)
    kinds = api.call("GET", f"/v1/movements?sku={WALL}&lot=Q-q-release&kind=quarantine_release", "warehouse")
    assert [_numbers(m, "quarantine") for m in kinds.json()["movements"]] == [(-20,), (-10,)]

    _refused(api, lambda: _post(api, path, "rel-3"), 422, "not_enough_stock", "quantity")


@pytest.mark.usefixtures("consistent")
def test_a_quarantined_line_is_written_off_as_damaged_with_its_reason(api: Stack) -> None:
    quarantine_id = _quarantined(api, "q-write-off")
    path = f"/v1/quarantine/{quarantine_id}/write-off"
    _refused(
        api,
        lambda: _post(api, path, "wo-0", {"quantity": "4", "unit": "box", "reason": "wet"}),
        422,
        "not_enough_stock",
        "quantity",
    )
    _refused(
        api,
        lambda: _post(api, path, "wo-0", {"quantity": "1", "unit": "box"}),
        422,
        "invalid_request",
        "reason",
    )

    written = _post(api, path, "wo-1", {"quantity": "12", "reason": "pallet soaked"})
    assert written.status_code == 200, written.text
    assert written.json()["result"]["outcome"] == "damaged"
    assert _numbers(
        _lot(api, WALL, "BUC1", "Q-q-write-off"), "on_hand", "damaged", "quarantine", "available"
    ) == (30, 12, 18, 0)
    released = _post(api, f"/v1/quarantine/{quarantine_id}/release", "wo-2")
    assert released.json()["result"]["status"] == "settled"
    row = api.call("GET", f"/v1/movements?sku={WALL}&lot=Q-q-write-off&kind=damage", "ops").json()[
        "movements"
    ][0]
    assert (row["reason"], row["actor"]) == ("pallet soaked", "test warehouse")
    assert _numbers(row, "damaged", "quarantine") == (12, -12)


@pytest.mark.usefixtures("consistent")
def test_an_unknown_quarantine_is_not_found(api: Stack) -> None:
    for name in (str(uuid.uuid4()), "not-a-uuid"):
        _refused(
            api,
            lambda name=name: _post(api, f"/v1/quarantine/{name}/release", "rel-x"),
            404,
            "unknown_quarantine",
            "quarantine_id",
        )


# -- damage --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("consistent")
def test_damage_marks_available_pieces_damaged_and_never_more_than_are_available(api: Stack) -> None:
    _receive(api, "dmg-rcv", {"warehouse": "BUC1", "sku": GROUT, "quantity": "10", "lot": "D1"})
    body = {"warehouse": "BUC1", "sku": GROUT, "lot": "D1", "quantity": "3", "reason": "torn bags"}

    damaged = _post(api, "/v1/damage", "dmg-1", body)
    assert damaged.status_code == 200 and damaged.json()["result"]["outcome"] == "damaged", damaged.text
    assert _numbers(_lot(api, GROUT, "BUC1", "D1"), "on_hand", "damaged", "available") == (10, 3, 7)
    stock = api.call("GET", f"/v1/stock/{GROUT}", "checkout").json()
    assert Decimal(str(stock["damaged"])) == 3
    buc1 = next(w for w in stock["warehouses"] if w["warehouse"] == "BUC1")
    assert _numbers(buc1, "on_hand", "damaged") == (Decimal(str(stock["on_hand"])), 3)

    _refused(
        api,
        lambda: _post(api, "/v1/damage", "dmg-2", {**body, "quantity": "8"}),
        422,
        "not_enough_stock",
        "quantity",
    )
    _refused(
        api,
        lambda: _post(api, "/v1/damage", "dmg-3", {**body, "reason": None}),
        422,
        "invalid_request",
        "reason",
    )
    _refused(
        api,
        lambda: _post(api, "/v1/damage", "dmg-4", {**body, "lot": "NONE"}),
        422,
        "not_enough_stock",
        "lot",
    )
    _refused(
        api, lambda: _post(api, "/v1/damage", "dmg-5", {**body, "sku": "NOPE-1"}), 422, "unknown_sku", "sku"
    )


@pytest.mark.usefixtures("consistent")
def test_damage_of_a_quarantined_line_is_its_write_off(api: Stack) -> None:
    quarantine_id = _quarantined(api, "q-damage", boxes="1")
    damaged = _post(api, "/v1/damage", "dmg-q", {"quarantine_id": quarantine_id, "reason": "cracked"})
    assert damaged.json()["result"]["status"] == "written_off", damaged.text
    assert _numbers(_lot(api, WALL, "BUC1", "Q-q-damage"), "damaged", "quarantine") == (10, 0)


# -- reads ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("consistent")
def test_the_movement_history_pages_newest_first_and_filters(api: Stack) -> None:
    _receive(
        api,
        "hist-1",
        *({"warehouse": "BUC1", "sku": MOSAIC, "quantity": "1", "lot": f"H{n}"} for n in range(3)),
    )
    everything = api.call("GET", f"/v1/movements?sku={MOSAIC}&limit=500", "ops").json()["movements"]
    ids = [m["id"] for m in everything]
    assert ids == sorted(ids, reverse=True)

    pages, cursor = [], None
    while True:
        page = api.call(
            "GET", f"/v1/movements?sku={MOSAIC}&limit=2" + (f"&cursor={cursor}" if cursor else ""), "ops"
        ).json()
        pages += [m["id"] for m in page["movements"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == ids

    at = everything[0]["at"]
    since = api.call("GET", "/v1/movements", "ops", params={"sku": MOSAIC, "since": at}).json()["movements"]
    assert {m["id"] for m in since} == {m["id"] for m in everything if m["at"] >= at}
    until = api.call("GET", "/v1/movements", "ops", params={"sku": MOSAIC, "until": at}).json()["movements"]
    assert {m["id"] for m in until} == {m["id"] for m in everything if m["at"] < at}
    lot = api.call("GET", f"/v1/movements?lot=H1&sku={MOSAIC}", "warehouse").json()["movements"]
    assert [(m["lot"], m["command_key"]) for m in lot] == [("H1", "hist-1:2")]

    hold = api.call(
        "POST",
        "/v1/holds?wait=10",
        "checkout",
        headers={"Idempotency-Key": "hist-cart"},
        json={"lines": [{"sku": MOSAIC, "quantity": "1"}]},
    )
    assert hold.status_code == 201, hold.text
    held = api.call("GET", f"/v1/movements?hold={hold.json()['hold_id']}", "ops").json()["movements"]
    assert [(m["kind"], m["actor"], m["hold_id"]) for m in held] == [
        ("reservation", "system", hold.json()["hold_id"])
    ]


BAD_QUERIES = {
    "a cursor not given out": ("cursor=abc", "invalid_cursor", "cursor"),
    "a cursor past BIGINT": (f"cursor={encode_cursor(10**20)}", "invalid_cursor", "cursor"),
    "an unknown kind": ("kind=theft", "invalid_request", "kind"),
    "an unknown SKU": ("sku=NOPE-1", "unknown_sku", "sku"),
    "an unknown warehouse": ("warehouse=NOWH", "unknown_warehouse", "warehouse"),
    "a hold that is no UUID": ("hold=12", "invalid_request", "hold"),
    "a time that is no time": ("since=yesterday", "invalid_request", "since"),
}


@pytest.mark.parametrize(("query", "code", "field"), BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
def test_a_bad_history_query_is_a_problem(api: Stack, query: str, code: str, field: str) -> None:
    answer = api.call("GET", f"/v1/movements?{query}", "ops")
    assert answer.status_code == 422, answer.text
    assert (answer.json()["code"], answer.json()["field"]) == (code, field)


ROUTES = [
    ("POST", "/v1/receipts", {"warehouse"}),
    ("POST", f"/v1/quarantine/{uuid.uuid4()}/release", {"warehouse"}),
    ("POST", f"/v1/quarantine/{uuid.uuid4()}/write-off", {"warehouse"}),
    ("POST", "/v1/damage", {"warehouse"}),
    ("GET", "/v1/movements", {"warehouse", "ops"}),
    ("GET", "/v1/valuation", {"warehouse", "ops"}),
]


@pytest.mark.parametrize(("method", "path", "allowed"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_each_goods_in_route_serves_only_its_roles(
    api: Stack, method: str, path: str, allowed: set[str]
) -> None:
    assert api.call(method, path).status_code == 401
    for role in {"checkout", "payments", "warehouse", "ops"} - allowed:
        refused = api.call(method, path, role)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), role

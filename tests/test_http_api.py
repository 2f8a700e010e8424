"""The HTTP front door, over real HTTP: `tessera api` and `tessera worker` against the real servers,
tokens made with the CLI, every route and every role boundary."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from redis import Redis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import Engine, text

from db.events import events_after
from domain.commands import shard_of
from tessera.handover import HandedHolds
from tests.stack import SKU, Stack, cli_out, running_stack, until

LINE = {"sku": SKU, "quantity": "2", "unit": "box"}


@pytest.fixture(scope="module")
def api(admin_engine: Engine, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module (the tests use keys of their own)."""
    with running_stack(admin_engine, template_db, tmp_path_factory.mktemp("http")) as stack:
        yield stack


def _sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _holds(api: Stack) -> int:
    with api.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM holds")).scalar_one())


def _recorded(api: Stack, key: str) -> bool:
    with api.engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM commands WHERE idempotency_key = :k"), {"k": key}).first()
    return found is not None


# -- who may do what -----------------------------------------------------------------------------

ROUTES = [
    ("POST", "/v1/holds", {"checkout"}),
    ("GET", f"/v1/holds/{uuid.uuid4()}", {"checkout", "ops"}),
    ("POST", f"/v1/holds/{uuid.uuid4()}/release", {"checkout"}),
    ("POST", "/v1/receipts", {"warehouse"}),
    ("GET", f"/v1/stock/{SKU}", {"checkout", "warehouse", "ops"}),
    ("POST", "/v1/payments/webhook", {"payments"}),
    ("GET", "/v1/events", {"ops"}),
    ("POST", "/v1/transfers", {"warehouse"}),
    ("POST", f"/v1/transfers/{uuid.uuid4()}/receive", {"warehouse"}),
    ("POST", f"/v1/transfers/{uuid.uuid4()}/cancel", {"warehouse"}),
    ("POST", "/v1/counts", {"warehouse"}),
    ("POST", "/v1/adjustments", {"warehouse", "ops"}),
    ("POST", f"/v1/adjustments/{uuid.uuid4()}/approve", {"ops"}),
    ("POST", f"/v1/adjustments/{uuid.uuid4()}/reject", {"ops"}),
    ("POST", "/v1/returns", {"warehouse", "checkout"}),
]


@pytest.mark.parametrize(
    ("method", "path", "allowed"), ROUTES, ids=[f"{m} {p.split('/')[2]}" for m, p, _ in ROUTES]
)
def test_each_route_refuses_a_missing_unknown_or_revoked_token_and_a_role_it_does_not_serve(
    api: Stack, method: str, path: str, allowed: set[str]
) -> None:
    # With a body that is not JSON too: who may not call a route learns nothing of what it takes.
    bodies = [{}, {"content": b'{"lines": [', "headers": {"Content-Type": "application/json"}}]
    for body in bodies if method == "POST" else bodies[:1]:
        missing = api.call(method, path, **body)
        assert missing.status_code == 401, missing.text
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.headers["content-type"] == "application/problem+json"
        headers = {**body.get("headers", {}), "Authorization": "Bearer tsr_nope"}
        assert api.call(method, path, **{**body, "headers": headers}).status_code == 401
        for role in {"checkout", "payments", "warehouse", "ops"} - allowed:
            refused = api.call(method, path, role, **body)
            assert refused.status_code == 403, (role, refused.text)
            assert refused.json()["code"] == "forbidden"


def test_a_revoked_token_is_refused_from_then_on(api: Stack) -> None:
    made = cli_out(api.env, "token", "create", "--role", "ops", "--name", "to revoke")
    token_id, token = made.split()[1], made.split()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    assert api.call("GET", f"/v1/stock/{SKU}", headers=auth).status_code == 200
    cli_out(api.env, "token", "revoke", token_id)
    assert api.call("GET", f"/v1/stock/{SKU}", headers=auth).status_code == 401


# -- holds ---------------------------------------------------------------------------------------


def test_a_hold_decided_within_wait_is_201_and_its_resend_200_with_the_same_hold(api: Stack) -> None:
    placed = api.call(
        "POST", "/v1/holds?wait=10", "checkout", headers={"Idempotency-Key": "cart-1"}, json={"lines": [LINE]}
    )
    assert placed.status_code == 201, placed.text
    hold = placed.json()
    assert hold["status"] == "reserved"
    assert hold["lines"][0]["pieces"] == "8.000" or hold["lines"][0]["pieces"] in ("8", "8.000")
    assert hold["lines"][0]["lot"] == "L1" and hold["lines"][0]["shade"] == "A"
    again = api.call(
        "POST", "/v1/holds?wait=10", "checkout", headers={"Idempotency-Key": "cart-1"}, json={"lines": [LINE]}
    )
    assert again.status_code == 200
    assert again.json()["hold_id"] == hold["hold_id"]
    read = api.call("GET", f"/v1/holds/{hold['hold_id']}", "checkout")
    assert read.status_code == 200 and read.json()["hold_id"] == hold["hold_id"]


def test_a_hold_not_decided_within_wait_is_202_with_its_location(api: Stack) -> None:
    worker = next(p for p in api.processes.procs if "worker" in p.args)
    worker.send_signal(signal.SIGSTOP)  # no writer: the hold stays pending
    try:
        placed = api.call(
            "POST", "/v1/holds", "checkout", json={"lines": [LINE], "idempotency_key": "cart-2"}
        )
    finally:
        worker.send_signal(signal.SIGCONT)
    assert placed.status_code == 202, placed.text
    assert placed.json() == {"hold_id": placed.json()["hold_id"], "status": "pending"}
    assert placed.headers["Location"] == f"/v1/holds/{placed.json()['hold_id']}"


def test_idempotency_conflicts_and_mismatched_keys_are_422_and_record_nothing(api: Stack) -> None:
    # With no wait, 202, or 201 when the worker decided the hold before the route read it back.
    first = api.call(
        "POST", "/v1/holds", "checkout", headers={"Idempotency-Key": "cart-3"}, json={"lines": [LINE]}
    )
    assert first.status_code in (201, 202), first.text
    before = _holds(api)
    other = api.call(
        "POST",
        "/v1/holds",
        "checkout",
        headers={"Idempotency-Key": "cart-3"},
        json={"lines": [{**LINE, "quantity": "3"}]},
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_conflict"
    mismatch = api.call(
        "POST",
        "/v1/holds",
        "checkout",
        headers={"Idempotency-Key": "a"},
        json={"lines": [LINE], "idempotency_key": "b"},
    )
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "idempotency_key_mismatch"
    missing = api.call("POST", "/v1/holds", "checkout", json={"lines": [LINE]})
    assert missing.status_code == 422 and missing.json()["field"] == "idempotency_key"
    assert _holds(api) == before
    assert not _recorded(api, "a") and not _recorded(api, "b")


def test_a_key_whose_first_request_is_still_being_recorded_is_409_and_then_the_same_hold(
    api: Stack,
) -> None:
    """While the first request under a key is handed to a writer that does not answer yet (it is
    stopped), a second one under the key is refused with 409 and records nothing; once the first is
    answered, the second gets its hold (200)."""
    redis = Redis.from_url(api.client.settings.redis_url)
    handed = HandedHolds(redis, api.client.settings.redis_namespace).key(
        shard_of(SKU, api.client.settings.shards)
    )
    workers = [p for p in api.processes.procs if "worker" in p.args and p.poll() is None]
    body = {"lines": [LINE]}
    warm = api.call("POST", "/v1/holds?wait=10", "checkout", headers={"Idempotency-Key": "busy-0"}, json=body)
    assert warm.status_code == 201  # the API has read the product: the next holds are handed over
    for worker in workers:
        worker.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                api.call,
                "POST",
                "/v1/holds?wait=10",
                "checkout",
                headers={"Idempotency-Key": "busy-1"},
                json=body,
            )
            until(lambda: redis.llen(handed) > 0, what="the first request handed over")
            second = api.call(
                "POST", "/v1/holds?wait=10", "checkout", headers={"Idempotency-Key": "busy-1"}, json=body
            )
            assert second.status_code == 409, second.text
            assert second.json()["code"] == "in_progress" and second.json()["field"] == "idempotency_key"
            for worker in workers:
                worker.send_signal(signal.SIGCONT)
            placed = first.result()
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
        redis.close()
    assert placed.status_code in (201, 202), placed.text
    again = api.call(
        "POST", "/v1/holds?wait=10", "checkout", headers={"Idempotency-Key": "busy-1"}, json=body
    )
    assert again.status_code == 200 and again.json()["hold_id"] == placed.json()["hold_id"]
    with api.engine.connect() as conn:
        holds = conn.execute(text("SELECT count(*) FROM holds WHERE idempotency_key = 'busy-1'")).scalar()
    assert holds == 1


BAD_BODIES = [
    pytest.param(b'{"lines": [', 400, "malformed_json", None, id="malformed-json"),
    pytest.param(
        json.dumps({"lines": [{**LINE, "colour": "grey"}]}).encode(),
        422,
        "invalid_request",
        "lines[0].colour",
        id="unknown-field",
    ),
    pytest.param(
        json.dumps({"lines": [{**LINE, "quantity": "-1"}]}).encode(),
        422,
        "invalid_command",
        "lines[0].quantity",
        id="negative",
    ),
    pytest.param(
        b'{"lines": [{"sku": "GRS-60x60-GREY", "quantity": 1.0000001, "unit": "piece"}]}',
        422,
        "invalid_command",
        "lines[0].quantity",
        id="inexact-number",
    ),
    pytest.param(
        json.dumps({"lines": [{**LINE, "sku": "NOPE"}]}).encode(),
        422,
        "unknown_sku",
        "lines[0].sku",
        id="unknown-sku",
    ),
    pytest.param(
        json.dumps({"lines": [{**LINE, "unit": "litre"}]}).encode(),
        422,
        "invalid_request",
        "lines[0].unit",
        id="wrong-unit",
    ),
    pytest.param(json.dumps({"lines": []}).encode(), 422, "invalid_command", "lines", id="empty-cart"),
    pytest.param(
        b'{"lines": [{"sku": "GRS-60x60-GREY", "quantity": "1", "quantity": "9", "unit": "box"}]}',
        422,
        "duplicate_member",
        "quantity",
        id="member-named-twice",
    ),
    pytest.param(
        json.dumps({"lines": [{**LINE, "sku": "GRS\x00"}]}).encode(),
        422,
        "invalid_command",
        "lines[0].sku",
        id="nul-in-a-sku",
    ),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_BODIES)
def test_a_bad_hold_request_is_a_problem_document_and_changes_nothing(
    api: Stack, body: bytes, status: int, code: str, field: str | None
) -> None:
    before = _holds(api)
    answer = api.call(
        "POST",
        "/v1/holds",
        "checkout",
        headers={"Idempotency-Key": "cart-bad", "Content-Type": "application/json"},
        content=body,
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert (problem["code"], problem["field"], problem["status"]) == (code, field, status)
    assert "Traceback" not in answer.text
    assert _holds(api) == before and not _recorded(api, "cart-bad")


def test_a_body_over_64_kib_is_413(api: Stack) -> None:
    body = json.dumps({"lines": [LINE], "idempotency_key": "x" * 70_000}).encode()
    answer = api.call(
        "POST", "/v1/holds", "checkout", headers={"Content-Type": "application/json"}, content=body
    )
    assert answer.status_code == 413 and answer.json()["code"] == "too_large"


def test_an_unknown_hold_is_404(api: Stack) -> None:
    assert api.call("GET", f"/v1/holds/{uuid.uuid4()}", "checkout").json()["code"] == "unknown_hold"
    assert api.call("GET", "/v1/holds/not-a-uuid", "checkout").status_code == 404


def _reserved(api: Stack) -> Decimal:
    return Decimal(api.call("GET", f"/v1/stock/{SKU}", "checkout").json()["reserved"])


def test_a_release_is_recorded_then_applied(api: Stack) -> None:
    before = _reserved(api)
    hold = api.call(
        "POST", "/v1/holds?wait=10", "checkout", headers={"Idempotency-Key": "cart-r"}, json={"lines": [LINE]}
    ).json()
    assert _reserved(api) == before + 8
    released = api.call(
        "POST",
        f"/v1/holds/{hold['hold_id']}/release?wait=10",
        "checkout",
        headers={"Idempotency-Key": "rel-1"},
    )
    assert released.status_code == 200, released.text
    assert released.json()["result"]["outcome"] == "released"
    deadline = time.monotonic() + 10  # the line's release follows on the product's shard
    while _reserved(api) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _reserved(api) == before


# -- payments ------------------------------------------------------------------------------------


def test_the_webhook_takes_a_good_signature_under_either_secret_and_answers_a_duplicate_the_same(
    api: Stack,
) -> None:
    hold = api.call(
        "POST", "/v1/holds?wait=10", "checkout", headers={"Idempotency-Key": "cart-p"}, json={"lines": [LINE]}
    ).json()
    body = json.dumps({"event_id": "evt-1", "hold_id": hold["hold_id"], "status": "paid"}).encode()

    def post(sent: bytes, signature: str | None) -> httpx.Response:
        """The webhook's call with this body and X-Signature (none if None)."""
        headers = {"Content-Type": "application/json"} | ({"X-Signature": signature} if signature else {})
        return api.call("POST", "/v1/payments/webhook", "payments", headers=headers, content=sent)

    # The signature first, whatever the body: a sender without the secret learns nothing else.
    for sent in (body, b'{"event_id": ', b'{"colour": "red"}'):
        for bad in (None, "sha256=00", _sign(sent, "not-our-secret")):
            refused = post(sent, bad)
            assert refused.status_code == 401 and refused.json()["code"] == "bad_signature", refused.text
    for sent, status, code in (
        (b'{"event_id": ', 400, "malformed_json"),
        (b'{"colour": "red"}', 422, "invalid_request"),
    ):
        signed = post(sent, _sign(sent, "new-secret"))
        assert (signed.status_code, signed.json()["code"]) == (status, code), signed.text
    twice = body.replace(b'"status": "paid"', b'"status": "failed", "status": "paid"')
    ambiguous = post(twice, _sign(twice, "new-secret"))
    assert ambiguous.status_code == 422 and ambiguous.json()["code"] == "duplicate_member", ambiguous.text
    assert not _recorded(api, "payment:evt-1")
    first = post(body, _sign(body, "new-secret"))
    assert first.status_code == 200, first.text
    duplicate = post(body, _sign(body, "old-secret"))
    assert duplicate.status_code == 200 and duplicate.json() == first.json()
    assert api.client.hold(hold["hold_id"]) is not None
    deadline = time.monotonic() + 15
    while api.client.hold(hold["hold_id"]).status != "confirmed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.client.hold(hold["hold_id"]).status == "confirmed"


# -- stock, health, events ----------------------------------------------------------------------


def test_stock_shows_each_lot_and_an_unknown_sku_is_404(api: Stack) -> None:
    stock = api.call("GET", f"/v1/stock/{SKU}", "warehouse").json()
    assert [(lot["warehouse"], lot["lot"], lot["shade"]) for lot in stock["lots"]] == [("BUC1", "L1", "A")]
    assert api.call("GET", "/v1/stock/NOPE", "ops").status_code == 404


def test_health_readiness_metrics_and_openapi(api: Stack) -> None:
    assert api.call("GET", "/healthz").json() == {"status": "ok"}
    assert api.call("GET", "/readyz").json()["status"] == "ready"
    api.call("GET", f"/v1/stock/{SKU}", "ops")
    assert "tessera_http_requests_total" in api.call("GET", "/metrics").text
    paths = api.call("GET", "/openapi.json").json()["paths"]
    assert {"/v1/holds", "/v1/holds/{hold_id}", "/v1/payments/webhook", "/v1/events"} <= set(paths)


def _events(api: Stack, last: str | None, count: int) -> list[tuple[str, str]]:
    """The next `count` hold.reserved events (id, topic) of the feed, after `last`."""
    return [(event_id, topic) for event_id, topic, _ in _feed(api, "types=hold.reserved", last, count)]


def _feed(api: Stack, query: str, last: str | None, count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The next `count` events (id, topic, data) of `/v1/events?{query}`, after `last`."""
    headers = {"Authorization": f"Bearer {api.tokens['ops']}"} | ({"Last-Event-ID": last} if last else {})
    got: list[tuple[str, str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{api.url}/v1/events?{query}", headers=headers, timeout=30) as stream:
        event_id = topic = None
        for line in stream.iter_lines():
            field, _, value = line.partition(":")
            if field == "id":
                event_id = value.strip()
            elif field == "event":
                topic = value.strip()
            elif field == "data" and event_id and topic:
                got.append((event_id, topic, json.loads(value)))
                if len(got) == count:
                    break
    return got


def _newest_event(api: Stack) -> str:
    with api.engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT xid::text || '-' || id FROM outbox ORDER BY xid DESC, id DESC LIMIT 1")
            ).scalar_one()
        )


def test_events_resume_after_the_last_event_id_with_none_missed_or_repeated(api: Stack) -> None:
    start = _newest_event(api)
    holds = [
        api.call(
            "POST",
            "/v1/holds?wait=10",
            "checkout",
            headers={"Idempotency-Key": f"cart-e{i}"},
            json={"lines": [LINE]},
        ).json()["hold_id"]
        for i in range(3)
    ]
    everything = _events(api, start, 3)
    assert [topic for _, topic in everything] == ["hold.reserved"] * 3
    resumed = _events(api, everything[0][0], 2)
    assert resumed == everything[1:]
    with api.engine.connect() as conn:
        order = (
            conn.execute(
                text(
                    "SELECT payload->>'hold_id' FROM outbox WHERE topic = 'hold.reserved' "
                    "AND payload->>'hold_id' = ANY(:h) ORDER BY xid, id"
                ),
                {"h": holds},
            )
            .scalars()
            .all()
        )
    assert order == holds


def test_events_of_one_sku_leave_out_the_others_and_an_unknown_sku_is_refused(api: Stack) -> None:
    start = _newest_event(api)
    holds = {
        sku: api.call(
            "POST",
            "/v1/holds?wait=10",
            "checkout",
            headers={"Idempotency-Key": f"cart-sku-{sku}"},
            json={"lines": [{**LINE, "sku": sku}]},
        ).json()
        for sku in (SKU, "WALL-20x50-WHITE")  # the second has no stock: rejected
    }
    assert [h["status"] for h in holds.values()] == ["reserved", "rejected"]
    for sku, hold in holds.items():
        ((_, topic, data),) = _feed(api, f"sku={sku}&types=hold", start, 1)
        assert (topic, data["hold_id"]) == (f"hold.{hold['status']}", hold["hold_id"])
    unknown = api.call("GET", "/v1/events?sku=NOPE-1", "ops")
    assert unknown.status_code == 422 and (unknown.json()["code"], unknown.json()["field"]) == (
        "unknown_sku",
        "sku",
    )


def test_an_event_committed_after_later_numbered_ones_is_not_passed_over_across_a_worker_restart(
    api: Stack,
) -> None:
    """A transaction that took an event id first and commits last: its event still comes, before the
    others, and a subscriber that resumes with Last-Event-ID after a worker was killed and replaced gets
    every event once."""
    start = _newest_event(api)
    with api.engine.connect() as slow:  # a writer that drew its event id first and commits last
        slow.execute(text("INSERT INTO outbox (topic, payload) VALUES ('hold.reserved', '{\"slow\": true}')"))
        placed = api.call(
            "POST",
            "/v1/holds?wait=10",
            "checkout",
            headers={"Idempotency-Key": "cart-late-1"},
            json={"lines": [LINE]},
        )
        assert placed.status_code == 201
        with api.engine.connect() as reader:  # what a subscriber is served meanwhile: nothing yet
            held_back = events_after(reader, start, topics=["hold.reserved"])
        assert held_back == [], "an event was served while an older transaction could still add one before it"
        slow.commit()
    first_two = _events(api, start, 2)
    worker = next(p for p in api.processes.procs if "worker" in p.args and p.poll() is None)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    api.processes.worker(name="replacement")
    again = api.call(
        "POST",
        "/v1/holds?wait=10",
        "checkout",
        headers={"Idempotency-Key": "cart-late-2"},
        json={"lines": [LINE]},
    )
    assert again.status_code == 201, again.text
    resumed = _events(api, first_two[-1][0], 1)
    everything = _events(api, start, 3)

    with api.engine.connect() as conn:
        ids = conn.execute(
            text(
                "SELECT xid::text || '-' || id, payload FROM outbox WHERE topic = 'hold.reserved' "
                "AND (xid, id) > (CAST(split_part(:s, '-', 1) AS text)::xid8, CAST(split_part(:s, '-', 2) AS bigint)) "
                "ORDER BY xid, id"
            ),
            {"s": start},
        ).all()
    assert [event_id for event_id, _ in everything] == [event_id for event_id, _ in ids]
    assert ids[0].payload == {"slow": True}  # committed last, served first: its transaction began first
    assert everything == first_two + resumed


ROLE_OF = {
    "/v1/holds": "checkout",
    "/v1/holds/{hold_id}": "checkout",
    "/v1/holds/{hold_id}/release": "checkout",
    "/v1/receipts": "warehouse",
    "/v1/stock/{sku}": "warehouse",
    "/v1/payments/webhook": "payments",
    "/v1/ops/shards": "ops",
    "/v1/ops/stock/{sku}": "ops",
    "/v1/ops/dead-letters": "ops",
    "/v1/ops/dead-letters/{key}/requeue": "ops",
    "/v1/transfers": "warehouse",
    "/v1/transfers/{transfer_id}/receive": "warehouse",
    "/v1/transfers/{transfer_id}/cancel": "warehouse",
    "/v1/counts": "warehouse",
    "/v1/adjustments": "warehouse",
    "/v1/adjustments/{adjustment_id}/approve": "ops",
    "/v1/adjustments/{adjustment_id}/reject": "ops",
    "/v1/returns": "warehouse",
}


def test_fuzzed_requests_never_get_a_5xx_or_an_answer_outside_the_schema(api: Stack) -> None:
    """schemathesis generates requests for every operation from /openapi.json (with a token of the
    operation's role): no 5xx, every answer as documented (status, content type, body)."""
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/v1/events":  # a stream that never ends: tested above
            continue
        role = ROLE_OF.get(operation.path)
        _fuzz(operation, {"Authorization": f"Bearer {api.tokens[role]}"} if role else {})


def _fuzz(operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        response = case.call(headers=headers, timeout=30)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
        # A request the schema allows may still break a rule no schema can say (an unknown SKU, a
        # fraction of a whole box): refused with a 4xx problem, not a failure of the API.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()


def test_the_books_reconcile_after_the_module_s_calls(api: Stack) -> None:
    """Run last in this module: whatever the calls above did, ledger = balances, reserved ≤ on_hand."""
    from db.reconcile import reconcile

    with api.engine.connect() as conn:
        assert reconcile(conn) == []
        bad = conn.execute(text("SELECT count(*) FROM stock_balances WHERE reserved > on_hand")).scalar_one()
    assert bad == 0


def _counted(api: Stack, status: str) -> float:
    """POST /v1/holds answers with `status` counted in /metrics."""
    metrics = api.call("GET", "/metrics", "ops").text
    for line in metrics.splitlines():
        labels = ('route="/v1/holds"', 'method="POST"', f'status="{status}"')
        if line.startswith("tessera_http_requests_total{") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_plain_hold_request_gets_the_answer_the_route_gives(api: Stack) -> None:
    """The shortcut past FastAPI's layers (a plain request) and the route (here: an extra query
    parameter, which the route ignores and the shortcut leaves to it) answer alike, and both are
    counted under the route."""
    before = _counted(api, "201")
    answers = [
        api.call("POST", path, "checkout", headers={"Idempotency-Key": key}, json={"lines": [LINE]})
        for path, key in (("/v1/holds?wait=10", "plain-1"), ("/v1/holds?wait=10&via=route", "plain-2"))
    ]
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    shapes = [
        {k: v for k, v in a.json().items() if k not in ("hold_id", "created_at", "expires_at")}
        | {"lines": [{k: v for k, v in line.items() if k != "available"} for line in a.json()["lines"]]}
        for a in answers
    ]
    assert shapes[0] == shapes[1]
    assert [a.headers["content-type"] for a in answers] == ["application/json"] * 2
    assert all(a.headers["x-request-id"] for a in answers)
    assert _counted(api, "201") == before + 2


def test_a_waiting_hold_with_no_writer_is_recorded_by_the_api_and_answered_202(api: Stack) -> None:
    workers = [p for p in api.processes.procs if "worker" in p.args and p.poll() is None]
    for worker in workers:  # handed to a writer that does not answer (any of the module's workers)
        worker.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        placed = api.call(
            "POST",
            "/v1/holds?wait=1",
            "checkout",
            headers={"Idempotency-Key": "stalled-1"},
            json={"lines": [LINE]},
        )
        took = time.monotonic() - started
        assert _recorded(api, "stalled-1")  # before the answer: the API recorded it itself
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
    assert placed.status_code == 202, placed.text
    assert 1.0 <= took < 5.0
    hold_id = placed.json()["hold_id"]
    until_decided = time.monotonic() + 20
    while api.call("GET", f"/v1/holds/{hold_id}", "checkout").json()["status"] == "pending":
        assert time.monotonic() < until_decided, "the hold was not decided once the writer came back"
        time.sleep(0.05)
    with api.engine.connect() as conn:
        holds = conn.execute(text("SELECT count(*) FROM holds WHERE idempotency_key = 'stalled-1'")).scalar()
    assert holds == 1

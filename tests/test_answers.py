"""Answers to a client's holds come on its own pub/sub channel; a lost one is read from PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time

import fakeredis
import pytest
from sqlalchemy import Engine

from producers import StockClient
from tessera.answers import AnswerChannel, Wakeups
from tessera.handoff import Handoff, HandoffTimeout, handed
from tessera.settings import Settings
from tests.conftest import Processes
from tests.test_holds import SKU, hold_of, receive


def _channel() -> tuple[AnswerChannel, fakeredis.FakeRedis]:
    server = fakeredis.FakeServer()
    channel = AnswerChannel(fakeredis.FakeRedis(server=server), "ns", "client-1")
    channel.listen()
    return channel, fakeredis.FakeRedis(server=server)


def test_an_answer_published_before_its_ticket_waits_is_kept_for_it() -> None:
    channel, publisher = _channel()
    Wakeups(publisher, "ns").wake({}, {"client-1": {"hold-a": '{"status":"reserved"}', "hold-b": "{}"}})
    assert channel.wait("hold-a", timeout=5) == b'{"status":"reserved"}'
    assert channel.wait("hold-b", timeout=5) == b"{}"


def test_an_answer_published_while_its_ticket_waits_wakes_it() -> None:
    channel, publisher = _channel()
    got: list[bytes | None] = []
    waiter = threading.Thread(target=lambda: got.append(channel.wait("hold-a", timeout=10)))
    waiter.start()
    deadline = time.monotonic() + 5
    while "hold-a" not in channel._waiting and time.monotonic() < deadline:  # the ticket is waiting
        time.sleep(0.001)
    assert "hold-a" in channel._waiting
    Wakeups(publisher, "ns").wake({}, {"client-1": {"hold-a": '{"status":"rejected"}'}})
    waiter.join(timeout=10)
    assert got == [b'{"status":"rejected"}']


def test_a_ticket_with_no_answer_gets_none_after_its_timeout() -> None:
    channel, publisher = _channel()
    Wakeups(publisher, "ns").wake({}, {"client-2": {"hold-a": "{}"}})  # another client's channel
    assert channel.wait("hold-a", timeout=0.2) is None


def test_a_client_that_missed_its_answers_still_gets_them_from_postgres(
    catalog: StockClient, processes: Processes, settings: Settings, engine: Engine, assert_consistent
) -> None:
    processes.worker()
    receive(catalog, SKU, "10", lot="L1")
    with StockClient(settings, engine=engine) as deaf:
        deaf.answers.listen = lambda: None  # never subscribes: every answer it is sent is lost
        result = hold_of(deaf, [{"sku": SKU, "quantity": "4", "unit": "piece"}]).wait(timeout=15)
    assert result.status == "reserved"
    assert result.lines[0].reserved_pieces == 4
    assert_consistent()


def test_a_handoff_wakes_every_waiter_once_set_and_is_set_once() -> None:
    handoff: Handoff[str] = Handoff()
    got: list[str] = []
    waiters = [threading.Thread(target=lambda: got.append(handoff.result(timeout=10))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    handoff.set_result("hold-a")
    for waiter in waiters:
        waiter.join(timeout=10)
    assert got == ["hold-a"] * 3
    assert handoff.result(timeout=0) == "hold-a"  # a late waiter passes at once
    with pytest.raises(RuntimeError):
        handoff.set_result("hold-b")


def test_a_handoff_raises_the_error_set_and_times_out_when_nothing_is() -> None:
    failed: Handoff[str] = Handoff()
    failed.set_exception(ValueError("unknown SKU"))
    with pytest.raises(ValueError, match="unknown SKU"):
        failed.result(timeout=1)
    with pytest.raises(TimeoutError):
        Handoff().result(timeout=0.05)


def test_a_coroutine_awaits_a_handoff_set_by_another_thread_without_holding_one() -> None:
    async def scenario() -> tuple[str, str, str]:
        late: Handoff[str] = Handoff()
        setter = threading.Timer(0.05, late.set_result, args=("hold-late",))
        setter.start()
        waiting = [asyncio.create_task(handed(late, 10)) for _ in range(2)]  # both wake
        first, second = await asyncio.gather(*waiting)
        ready: Handoff[str] = Handoff()
        ready.set_result("hold-ready")
        return first, second, await handed(ready, 0)

    assert asyncio.run(scenario()) == ("hold-late", "hold-late", "hold-ready")


def test_a_coroutine_gets_the_error_set_or_a_timeout() -> None:
    async def scenario() -> None:
        failed: Handoff[str] = Handoff()
        threading.Timer(0.02, failed.set_exception, args=(ValueError("unknown SKU"),)).start()
        with pytest.raises(ValueError, match="unknown SKU"):
            await handed(failed, 10)
        with pytest.raises(HandoffTimeout):
            await handed(Handoff(), 0.05)

    asyncio.run(scenario())

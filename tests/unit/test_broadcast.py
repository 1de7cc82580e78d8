"""The event log of one answer: its state machine, its readers and its byte cap (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ccbalancer.sharing.broadcast import (
    Broadcast,
    Failure,
    IllegalTransition,
    Lagged,
    Reader,
    State,
)
from ccbalancer.sse.event import Event
from tests.conftest import settle
from tests.unit.answers import HEAD, completed, delta, event, opening

FAILED = Failure(503, "overloaded_error", "down", committed=False)


def test_late_reader_gets_every_event_from_the_start() -> None:
    b = completed(texts=("a", "b", "c"))
    names = [b.get(i).name for i in range(b.end)]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
        "message_stop"
    ]
    assert b.succeeded and b.ready and b.state is State.FINISHED


def test_nothing_is_published_before_commit() -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    assert not b.ready and b.end == 0 and b.state is State.WAITING
    b.commit(HEAD, opening())
    assert b.ready and b.head is HEAD and b.end == 2 and b.state is State.COMMITTED


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        ([], "publish"),  # nothing goes out before the commit
        ([], "finish"),
        (["commit"], "commit"),  # one head per answer
        (["commit", "finish"], "publish"),  # nothing after the end
        (["commit", "finish"], "fail"),
        (["fail"], "commit"),  # a failed answer never starts
        (["fail"], "fail"),
    ],
)
def test_illegal_transitions_are_refused(steps: list[str], refused: str) -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    actions = {
        "commit": lambda: b.commit(HEAD, opening()),
        "publish": lambda: b.publish([delta("x")]),
        "finish": lambda: b.finish([event("message_stop")]),
        "fail": lambda: b.fail(FAILED),
    }
    for step in steps:
        actions[step]()
    before = (b.state, b.end)
    with pytest.raises(IllegalTransition):
        actions[refused]()
    assert (b.state, b.end) == before  # a refused transition changes nothing


def test_a_failure_before_the_commit_sends_no_frames() -> None:
    """The client of an uncommitted answer gets a status, so an error frame has no place."""
    b = Broadcast("k", 1 << 20, created=0.0)
    b.fail(FAILED, [event("error", error={"type": "api_error", "message": "x"})])
    assert b.end == 0 and b.failure is FAILED and b.done and not b.succeeded


def test_a_committed_failure_ends_with_its_error_frame() -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    frame = event("error", error={"type": "overloaded_error", "message": "x"})
    b.fail(Failure(529, "overloaded_error", "x", committed=True), [frame])
    assert b.get(b.end - 1).raw == frame.raw and b.state is State.FAILED


async def test_one_publish_wakes_every_waiter_and_nothing_wakes_them_before() -> None:
    """Waiting is notification: waiters stay parked until the producer offers events."""
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    async with asyncio.TaskGroup() as group:
        waiters = [group.create_task(b.wait()) for _ in range(3)]
        await settle()
        b.publish([])  # nothing new: nobody is woken
        await settle()
        assert not any(w.done() for w in waiters)
        b.publish([delta("x")])
        await settle()
        assert all(w.done() for w in waiters)


@pytest.mark.parametrize("end", ["finish", "fail"])
async def test_the_end_of_the_answer_wakes_waiters(end: str) -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    if end == "finish":
        b.commit(HEAD, opening())
    async with asyncio.TaskGroup() as group:
        waiter = group.create_task(b.wait())
        await settle()
        assert not waiter.done()
        if end == "finish":
            b.finish()
        else:
            b.fail(FAILED)
        await settle()
        assert waiter.done()
    assert b.ready and b.done


async def test_a_cancelled_waiter_does_not_strand_the_others() -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    async with asyncio.TaskGroup() as group:
        leaving = group.create_task(b.wait())
        staying = group.create_task(b.wait())
        await settle()
        leaving.cancel()
        await settle()
        b.publish([delta("x")])
        await settle()
        assert staying.done() and leaving.cancelled()


def test_log_is_capped_and_a_reader_behind_the_cap_is_cut_not_skipped() -> None:
    b = Broadcast("k", 2000, created=0.0)
    b.commit(HEAD, [event("message_start")])
    for i in range(100):
        b.publish([delta(f"{i:04d}" + "x" * 40)])
        assert b.bytes <= b.max_bytes
    assert b.trimmed
    with pytest.raises(Lagged):
        b.get(0)
    newest = b.get(b.end - 1)
    assert b"0099" in newest.raw  # readers near the head keep going


def test_log_under_the_cap_is_never_trimmed() -> None:
    b = completed(max_bytes=1 << 20, texts=tuple("abcdefgh"))
    assert not b.trimmed
    assert b.get(0).name == "message_start"


class Taker(Reader):
    """A reader whose client always has room: it takes what it is offered, or refuses."""

    def __init__(self, accept: bool = True) -> None:
        super().__init__()
        self.accept = accept
        self.taken: list[bytes] = []

    def take(self, broadcast: Broadcast, start: int, events: Sequence[Event]) -> bool:
        if not self.accept:
            return False
        self.taken.append(b"".join(e.raw for e in events))
        self.cursor = start + len(events)
        return True


def caught_up() -> tuple[Broadcast, Taker]:
    """A committed answer and a ``Taker`` at its end, ready to park."""
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    reader = Taker()
    reader.cursor = b.end
    return b, reader


async def test_a_parked_reader_takes_each_publish_in_the_producers_step() -> None:
    """The direct path: events are handed to a parked reader as they are published, one offer
    per publish, and its task stays parked (no wake-up per event) until the answer ends."""
    b, reader = caught_up()
    sent = [delta(text) for text in ("a", "b", "c")]
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        for one in sent:
            b.publish([one])
            assert reader.taken[-1] == one.raw  # delivered before publish returned
        await settle()
        assert not parked.done() and reader.cursor == b.end
        b.finish([event("message_stop")])  # offered too, and the reader's task is woken
        await settle()
        assert parked.done()
    assert reader.taken == [e.raw for e in sent] + [event("message_stop").raw]
    assert reader.cursor == b.end


async def test_a_reader_that_cannot_take_is_woken_with_nothing_written() -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    reader = Taker(accept=False)
    reader.cursor = b.end
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        b.publish([delta("x")])
        await settle()
        assert parked.done() and reader.cursor == 2  # its own task catches up from here
    b.publish([delta("y")])  # no longer parked: not offered
    assert reader.taken == []


async def test_a_reader_whose_client_left_is_never_offered_again() -> None:
    b, reader = caught_up()
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        parked.cancel()
    b.publish([delta("x")])
    assert reader.taken == [] and reader.parked is None


async def test_a_reader_behind_the_offer_is_woken_not_offered() -> None:
    """Only a reader exactly at the offer's start can take it; one behind must catch up from
    the log in order first."""
    b, reader = caught_up()
    reader.cursor -= 1
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        b.publish([delta("x")])
        await settle()
        assert parked.done() and reader.taken == []
    b.finish()


def test_frames_joins_events_up_to_a_byte_limit() -> None:
    b = completed(texts=("a", "b", "c"))
    raws = [b.get(i).raw for i in range(b.end)]
    assert b.frames(0, b.end) == (b.end, b"".join(raws))
    stop, data = b.frames(1, b.end, limit=len(raws[1]) + 1)
    assert (stop, data) == (3, raws[1] + raws[2])  # cut once the limit is passed
    assert b.frames(2, 3, limit=1) == (3, raws[2])  # at least one event, however large


class Broken(Reader):
    def take(self, broadcast: Broadcast, start: int, events: Sequence[Event]) -> bool:
        raise RuntimeError("a bug in one subscriber")


async def test_a_reader_that_raises_is_woken_and_the_others_still_get_the_event() -> None:
    """One subscriber's failure is its own: the producer's publish goes on for everyone."""
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    broken, fine = Broken(), Taker()
    broken.cursor = fine.cursor = b.end
    async with asyncio.TaskGroup() as group:
        woken = group.create_task(b.park(broken))
        parked = group.create_task(b.park(fine))
        await settle()
        b.publish([delta("x")])  # does not raise
        await settle()
        assert woken.done() and not parked.done()
        assert fine.taken == [delta("x").raw]
        b.finish()


async def test_events_published_together_are_offered_together_in_one_take() -> None:
    """What one upstream read brought is written to a caught-up client in one write."""
    b, reader = caught_up()
    sent = [delta(text) for text in ("a", "b", "c")]
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        b.publish(sent)
        assert reader.taken == [b"".join(e.raw for e in sent)] and reader.cursor == b.end
        assert not parked.done()
        b.finish()

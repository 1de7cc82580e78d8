"""SharedCalls (count_tokens): one call per key in flight, its answer reused for the TTL,
callers leaving never cancel the others' answer, entries bounded."""

from __future__ import annotations

import asyncio

from ccbalancer.sharing.calls import Answer, SharedCalls
from tests.conftest import Clock

OK = Answer(200, b'{"input_tokens": 7}', {})


async def test_callers_in_flight_share_one_call_and_one_leaving_does_not_cancel_it() -> None:
    clock = Clock(0.0)
    shared = SharedCalls("t", clock, ttl=60, max_entries=10)
    gate = asyncio.Event()

    async def call() -> Answer:
        await gate.wait()
        return OK

    async with asyncio.TaskGroup() as group:
        callers = [group.create_task(shared.get("k", call)) for _ in range(5)]
        await asyncio.sleep(0)  # every caller runs up to its wait on the shared call
        callers[0].cancel()  # one client leaves
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*callers, return_exceptions=True)
    assert shared.calls == 1
    assert callers[0].cancelled()
    assert [c.result() for c in callers[1:]] == [OK] * 4
    await shared.close()


async def test_answers_expire_and_errors_are_not_kept() -> None:
    clock = Clock(0.0)
    shared = SharedCalls("t", clock, ttl=60, max_entries=10)
    answers = iter([Answer(529, b"{}", {}), OK, OK])

    async def call() -> Answer:
        return next(answers)

    assert (await shared.get("k", call)).status == 529
    assert (await shared.get("k", call)) == OK  # the error was not kept
    assert (await shared.get("k", call)) == OK and shared.calls == 2
    clock.now = 61
    await shared.get("k", call)
    assert shared.calls == 3
    await shared.close()


async def test_entries_are_bounded_oldest_out_first() -> None:
    shared = SharedCalls("t", lambda: 0.0, ttl=60, max_entries=2)

    async def call() -> Answer:
        return OK

    for key in ("a", "b", "c"):
        await shared.get(key, call)
    assert len(shared) == 2
    await shared.get("a", call)  # evicted: called again
    assert shared.calls == 4
    await shared.close()

"""Hedged first token: a slow first candidate gets company (``settings.hedge_after``).

When the first candidate has not committed within ``hedge_after`` seconds and another one can
take the request, that one is started too; the first of the two to commit is the answer and
the other is cancelled at once (``Gate``). At most one hedge per request, never after a commit.
The loser is neutral for health (it did nothing wrong) and is recorded as ``cancelled``; the
hedge's attempt is marked ``hedged`` in the record (and counted in
``ccbalancer_hedges_total{outcome}``), so users can see what hedging costs them. How each
attempt that ends is judged — success, failover, a committed failure and its recovery — is the
candidate loop's (``Settle``); this module only runs the race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ccbalancer.errors import UpstreamError
from ccbalancer.observe.record import Attempt
from ccbalancer.relay.attempt import AttemptRun, Lost

if TYPE_CHECKING:
    from ccbalancer.relay.relay import Attempting, Started


class Settle(Protocol):
    def succeeded(self, at: Attempting, item: Started, run: AttemptRun) -> None: ...

    async def failed(
        self, at: Attempting, item: Started, run: AttemptRun, error: UpstreamError
    ) -> bool: ...


class Gate:
    """The first attempt to commit is the answer: it claims the gate, and the others are
    cancelled (and recorded as lost) in the same step, before any of their bytes could reach
    the client and before any subscriber could read the record."""

    __slots__ = ("at", "tasks", "winner")

    def __init__(self, at: Attempting) -> None:
        self.at = at
        self.winner: AttemptRun | None = None
        self.tasks: dict[AttemptRun, asyncio.Task[UpstreamError | Lost | None]] = {}

    def claim(self, run: AttemptRun) -> bool:
        if self.winner is None:
            self.winner = run
            for other, task in self.tasks.items():
                if other is not run and not task.done():
                    self.lose(other)
                    task.cancel()
        return self.winner is run

    def lose(self, run: AttemptRun) -> None:
        if run.lost:
            return
        run.lost = True
        winner = self.winner.provider.name if self.winner is not None else "another candidate"
        record = Attempt(
            run.provider.name, "cancelled", detail=f"lost the race to {winner}", hedged=run.hedged
        )
        self.at.broadcast.outcome.attempts.append(record)


async def race(
    at: Attempting, first: Started, next_item: Callable[[], Started | None], settle: Settle
) -> bool:
    """Run ``first``, hedged after ``hedge_after``; True once the answer is decided, False
    when every runner failed over (the candidate loop goes on with the rest)."""
    gate = Gate(at)
    runners: dict[asyncio.Task[UpstreamError | Lost | None], tuple[Started, AttemptRun]] = {}
    due = asyncio.Event()
    scheduler = at.scheduler
    after = at.call.config.settings.hedge_after_for(at.plan.route_key)
    timer = scheduler.call_at(scheduler.time() + after, due.set)
    try:
        async with asyncio.TaskGroup() as group:

            def start(item: Started) -> None:
                run = item.start(at, gate=gate, hedged=item.hedged)
                task = group.create_task(_attempt(run), name=f"attempt:{item.provider.name}")
                gate.tasks[run] = task
                runners[task] = (item, run)

            start(first)
            waiter = group.create_task(due.wait(), name="hedge-timer")
            try:
                decided = await _until_decided(at, runners, waiter, start, next_item, settle, gate)
            finally:  # the answer is decided (or nobody waits for it): the rest lost
                waiter.cancel()
                for task, (_, run) in runners.items():
                    gate.lose(run)
                    task.cancel()
    finally:
        timer.cancel()
        for item, _ in runners.values():  # lost, and never settled: neutral for health
            at.health_neutral(item.health)
    return decided


async def _until_decided(
    at: Attempting,
    runners: dict[asyncio.Task[UpstreamError | Lost | None], tuple[Started, AttemptRun]],
    waiter: asyncio.Task[bool],
    start: Callable[[Started], None],
    next_item: Callable[[], Started | None],
    settle: Settle,
    gate: Gate,
) -> bool:
    hedged = False
    while runners:
        watched: set[asyncio.Future[Any]] = set(runners)
        if not hedged:
            watched.add(waiter)
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done and not hedged:
            hedged = True
            item = next_item() if gate.winner is None else None
            if item is not None:
                item.hedged = True
                start(item)
        for task in [t for t in runners if t in done]:
            item, run = runners.pop(task)
            result = task.result()
            if isinstance(result, Lost):
                gate.lose(run)
                at.health_neutral(item.health)
            elif result is None:
                settle.succeeded(at, item, run)
                return True
            elif await settle.failed(at, item, run, result):
                return True
    return False


async def _attempt(run: AttemptRun) -> UpstreamError | Lost | None:
    """One runner: its failure as a value (the race judges it), or ``Lost`` when the gate
    cancelled it for the winner."""
    try:
        await run.run()
    except UpstreamError as error:
        return error
    except Lost as lost:
        return lost
    except asyncio.CancelledError:
        if run.lost:
            return Lost()
        raise
    return None

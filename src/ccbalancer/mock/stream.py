"""Writes pre-encoded frames to one client with the timing and faults a Script asks for.

One ``StreamResponse.write`` per event, no per-event encoding or logging: the benchmark runs a
thousand of these at once and measures the balancer, not the mock. A fault fires at a frame
position (``error_after``, ``cut_after``, ``stall_after``, clamped to the stream length); when
several share the earliest position the error wins over the cut, the cut over the stall.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiohttp import web

from ccbalancer.mock.frames import Frame
from ccbalancer.mock.script import Script

# A stall waits for the client to leave; past this the mock gives up and drops the connection
# so a forgotten client cannot pin a handler forever (Claude Code itself gives up after 300 s).
STALL_LIMIT = 600.0


def _position(after: int | None, total: int) -> int | None:
    return None if after is None else max(0, min(after, total))


def abort(request: web.BaseRequest) -> None:
    """Drop the TCP connection without a terminating chunk (a reset / cut, not an end)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def stall() -> None:
    """Send nothing more until the client leaves (aiohttp cancels the handler then)."""
    await asyncio.sleep(STALL_LIMIT)


async def play(
    request: web.BaseRequest,
    response: web.StreamResponse,
    frames: Sequence[Frame],
    error: Frame,
    script: Script,
) -> None:
    """Write ``frames`` (then the fault, if any) to a prepared ``response``."""
    total = len(frames)
    error_at = _position(script.error_after, total)
    cut_at = _position(script.cut_after, total)
    stall_at = _position(script.stall_after, total)
    stop = min((p for p in (error_at, cut_at, stall_at) if p is not None), default=total)

    write = response.write
    delay = script.delay
    if script.first_event_delay > 0:
        await asyncio.sleep(script.first_event_delay)
    # Real providers send message_start, ping and content_block_start together and pace only
    # the content that follows; pacing the preamble too would charge the balancer's
    # hold-until-content (DESIGN.md 5.5) with gaps no real upstream has.
    paced_from = next((i for i, f in enumerate(frames) if b"_delta" in f.head), 1)
    stamp = 0
    for number in range(stop):
        if number >= paced_from and delay > 0:
            await asyncio.sleep(delay)
        frame = frames[number]
        if frame.tail is None:
            await write(frame.head)
        else:
            # taken as late as possible: the benchmark measures from here to the client's read
            await write(frame.head + b"%d:%d;" % (stamp, time.monotonic_ns()) + frame.tail)
            stamp += 1

    if stop == error_at:
        if stop and delay > 0:
            await asyncio.sleep(delay)
        await write(error.head)
    elif stop == cut_at:
        if script.cut_mid_event and stop < total:
            await write(frames[stop].half())
        abort(request)
        return
    elif stop == stall_at:
        await stall()
        abort(request)
        return
    await response.write_eof()

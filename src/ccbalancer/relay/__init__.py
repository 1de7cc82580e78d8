"""Producing one answer: the call spec, the attempt loop and the sans-IO commit machine.

``Relay.produce`` is what the hub runs for a new answer: candidates from the planner, one
``AttemptRun`` each, every decision about an upstream stream taken by a ``CommitMachine``.
The upstream side is behind ``UpstreamTransport`` (real: ``upstream.client``; in-memory:
``MemoryTransport``). Imports no aiohttp.web and nothing of ``proxy/``.
"""

from ccbalancer.relay.call import Call
from ccbalancer.relay.relay import Relay
from ccbalancer.relay.transport import MemoryTransport, UpstreamCall, UpstreamTransport

__all__ = ["Call", "MemoryTransport", "Relay", "UpstreamCall", "UpstreamTransport"]

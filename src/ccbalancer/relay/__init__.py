"""Producing one answer: the call spec, the attempt loop and the sans-IO commit machine.

``relay.relay.Relay.produce`` is what the hub runs for a new answer: candidates from the
planner, one ``AttemptRun`` each, every decision about an upstream stream taken by a
``CommitMachine``, a committed answer that fails finished elsewhere (``relay.recovery``). The
upstream side is behind ``relay.transport.UpstreamTransport`` (real: ``upstream.client``;
in-memory: ``MemoryTransport``). Imports no aiohttp.web and nothing of ``proxy/``. Modules are
imported one by one (``relay.continuation`` alone is what the simulated providers need).
"""

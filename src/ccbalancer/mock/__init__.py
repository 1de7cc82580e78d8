"""Simulated Anthropic and OpenAI-compatible providers for the demo, the tests and the benchmark.

Real HTTP servers (aiohttp.web) with scripted behaviour per request: see ``Script`` for every
knob, ``MockServer`` for the Python API and ``control.py`` for the HTTP one.
"""

from ccbalancer.mock.cli import add_arguments, run, run_mock
from ccbalancer.mock.demo import DEMO_KINDS, DEMO_PROVIDERS
from ccbalancer.mock.script import Script
from ccbalancer.mock.server import MockServer, RecordedRequest

__all__ = [
    "DEMO_KINDS",
    "DEMO_PROVIDERS",
    "MockServer",
    "RecordedRequest",
    "Script",
    "add_arguments",
    "run",
    "run_mock",
]

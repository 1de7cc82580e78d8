"""Server-sent events: incremental parser, event encoding, and events -> Message accumulation.

Sans-IO: bytes or events in, events or messages out. No aiohttp, no sockets.
"""

from ccbalancer.sse.accumulate import MessageAccumulator
from ccbalancer.sse.event import Event, encode_event
from ccbalancer.sse.parser import SSEError, SSEParser

__all__ = ["Event", "MessageAccumulator", "SSEError", "SSEParser", "encode_event"]

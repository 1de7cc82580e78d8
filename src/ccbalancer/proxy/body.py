"""Reading a request body a client controls: size, time, encoding and memory all bounded.

* size: ``max_body_bytes`` of decoded bytes (aiohttp decodes ``content-encoding`` as it reads),
  else 413;
* time: ``client_read_timeout`` between two reads and ``client_body_timeout`` for the whole
  body, else 400 (a body trickling a byte every few seconds is not read forever);
* encoding: a body that cannot be decoded is 400, never a 500;
* memory: the body's share of ``BodyBudget`` — raw bytes while reading, then what the parsed
  form costs plus two or three times the raw size (what serving it adds: the copy sent
  upstream, UTF-8 caches) — is reserved *before* it is allocated; past the limit the answer
  is 429 with ``retry-after: 1``.

Header values must be UTF-8: a header the balancer hashes, logs or forwards can then be
encoded anywhere without surprise.
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import orjson
from aiohttp import web

from ccbalancer.budget import Lease
from ccbalancer.config.schema import Settings
from ccbalancer.errors import ClientError
from ccbalancer.proxy.connection import forget_frames

# Upper bounds, in bytes, of what orjson builds for each structural character, calibrated
# with tracemalloc on CPython 3.11 (tests/unit/test_body_cost.py): an object 72 (empty dict and
# its reference), an array 64, a member 120 (the dict entry and its key), a quote 26 (half a
# string header), a comma 36 (a reference and a number object). Characters inside strings
# are counted too: text-heavy bodies get an overestimate, refined by ``measured_cost``.
_COSTS = ((b"{", 72), (b"[", 64), (b":", 120), (b'"', 26), (b",", 36))
# every byte but those five: deleted in one pass, the five are counted in what is left (a
# Claude Code body of 320 KB keeps ~22 KB; five counts over the whole body took twice as long)
_NOT_STRUCTURE = bytes(b for b in range(256) if bytes([b]) not in {c for c, _ in _COSTS})
_ASTRAL = re.compile(rb"[\xf0-\xf4]")  # a 4-byte UTF-8 sequence: its string is stored UCS-4
# Walk at most this many parsed values to measure them exactly (a Claude Code body has a few
# thousand; ~2 ms); a denser body keeps its estimate, which is tight for dense bodies.
_MEASURE_NODES = 8192


def check_headers(request: web.BaseRequest) -> None:
    """400 for a header value that is not UTF-8 (aiohttp hands such bytes over as surrogates,
    which fail wherever the value is encoded again: hashing, forwarding, logging)."""
    for name, value in request.headers.items():
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ClientError(400, f"header {name[:64]} is not valid UTF-8") from None


def estimated_cost(raw: bytes | bytearray) -> int:
    """An upper bound of the memory ``orjson.loads(raw)`` allocates, computed at C speed."""
    width = 1 if raw.isascii() else 4 if _ASTRAL.search(raw) else 2
    structure = raw.translate(None, _NOT_STRUCTURE)
    return width * len(raw) + sum(structure.count(char) * cost for char, cost in _COSTS)


def measured_cost(value: Any, max_nodes: int = _MEASURE_NODES) -> int | None:
    """What a parsed body holds (``sys.getsizeof`` of every value and key), or None when it
    has more than ``max_nodes`` values. Iterative: a deeply nested body cannot recurse."""
    total = 0
    stack = [value]
    nodes = 0
    size = sys.getsizeof
    while stack:
        item = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            return None
        total += size(item)
        if isinstance(item, dict):
            total += sum(size(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def _too_much(limit: int) -> ClientError:
    return ClientError(
        429,
        f"the balancer holds too many request bodies right now ({limit} bytes in total); "
        "retry shortly",
        headers={"retry-after": "1"},
    )


async def _read(request: web.BaseRequest, settings: Settings, lease: Lease) -> bytearray:
    limit, memory = settings.max_body_bytes, settings.body_memory_limit
    length = request.content_length
    if length is not None and length > limit:
        raise ClientError(413, f"request body is larger than {limit} bytes")
    if length and not lease.resize(length, memory):
        raise _too_much(memory)
    raw = bytearray()
    gap = settings.client_read_timeout
    reader = request.content
    # A compressed body is decoded ahead of our reads, into aiohttp's buffer: count it twice
    # while reading (measured: a 1 MB gzip body cost 1 MB more than a plain one).
    factor = 2 if "content-encoding" in request.headers else 1
    try:
        async with asyncio.timeout(settings.client_body_timeout):
            while True:
                try:
                    async with asyncio.timeout(gap):
                        chunk = await reader.readany()
                except TimeoutError:  # (the whole-body deadline arrives as a cancellation)
                    raise ClientError(
                        400, f"request body incomplete: nothing received for {gap:g}s"
                    ) from None
                if not chunk:
                    return raw
                if len(raw) + len(chunk) > limit:
                    raise ClientError(413, f"request body is larger than {limit} bytes")
                if not lease.resize(max(lease.size, factor * (len(raw) + len(chunk))), memory):
                    raise _too_much(memory)
                raw += chunk
    except TimeoutError:
        raise ClientError(
            400, f"request body incomplete after {settings.client_body_timeout:g}s"
        ) from None
    except web.RequestPayloadError as exc:
        # aiohttp could not decode the body: bad gzip/deflate, or broken chunked framing
        forget_frames(exc)
        encoding = request.headers.get("content-encoding", "")[:32]
        what = f" (content-encoding: {encoding})" if encoding else ""
        raise ClientError(400, f"request body could not be decoded{what}") from None
    except (web.HTTPException, ConnectionError, ValueError):
        raise ClientError(400, "request body could not be read completely") from None


async def read_json_body(
    request: web.BaseRequest, settings: Settings, lease: Lease
) -> tuple[dict[str, Any], bytes]:
    """The body as a JSON object and as received (kept for mid-stream recovery), its cost
    held by ``lease``; or a ``ClientError``."""
    buffer = await _read(request, settings, lease)
    if not buffer:
        raise ClientError(400, "request body is empty; expected a JSON object")
    memory = settings.body_memory_limit
    # While parsing, the raw bytes and the parsed form are alive together.
    estimate = estimated_cost(buffer)
    if not lease.resize(len(buffer) + estimate, memory):
        raise _too_much(memory)
    raw = bytes(buffer)  # within the reservation: the estimate is at least the raw size
    del buffer
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(400, f"request body is not valid JSON: {exc.msg}") from None
    # Held from here until the body is let go of: the parsed form, plus twice the raw size,
    # which stands for what serving it adds (measured): the request serialized for the
    # upstream, and the coalescing key's and the writes' transients, or the raw bytes kept
    # for mid-stream recovery. Non-ASCII text costs a third time: serializing a non-ASCII str
    # makes CPython cache its UTF-8 form inside it.
    copies = (2 if raw.isascii() else 3) * len(raw)
    if not isinstance(body, dict):
        raise ClientError(400, "request body must be a JSON object")
    measured = measured_cost(body)
    if not lease.resize(copies + (estimate if measured is None else measured), memory):
        raise _too_much(memory)
    return body, raw
